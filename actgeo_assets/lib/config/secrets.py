"""Passwords in database URLs: shown as ``***`` in every message, log line and repr.

A URL SQLAlchemy can parse is rendered with its password hidden; any other text has the password of each
``scheme://user:password@`` in it masked by pattern (a URL that does not parse may still hold one).
"""

from __future__ import annotations

import re
from typing import Any

_USERINFO = re.compile(r"(://[^/:@\s]*:)\S*@")


def mask_url(url: Any) -> str:
    """``url`` with its password shown as ``***``, for messages and logs. A URL SQLAlchemy cannot parse (or
    any text) has the password of each ``scheme://user:password@`` in it masked."""
    text = url if isinstance(url, str) else str(url)
    try:
        from sqlalchemy.engine import make_url

        return make_url(text).render_as_string(hide_password=True)
    except Exception:  # noqa: BLE001 - not a URL: mask by pattern
        return mask_passwords(text)


def mask_passwords(text: str) -> str:
    """``text`` with the password of each ``scheme://user:password@`` in it shown as ``***``."""
    return _USERINFO.sub(r"\1***@", text)
