"""Numbers as people read them: the one rule every report, table and metadata panel follows.

Below 1 in magnitude a float keeps 4 significant digits (0.9161333 -> 0.9161); at or above 1 at most 4
decimals (12.345678 -> 12.3457); an integral float is an integer (3.0 -> 3); numpy scalars are plain Python.
:func:`round_number` keeps the value a number (typed metadata, JSON); :func:`format_number` writes it as
text with thousands separators (1234567 -> ``1,234,567``).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np


def round_number(v: Any) -> Any:
    """``v`` rounded by the module's rule, still a number (int or float); a non-finite float as its text
    (``"nan"``, ``"inf"``); a bool, None or non-number unchanged."""
    if isinstance(v, np.generic):
        v = v.item()
    if isinstance(v, bool) or not isinstance(v, int | float):
        return v
    if isinstance(v, int):
        return v
    if not math.isfinite(v):
        return str(v)
    if v.is_integer():
        return int(v)
    return float(f"{v:.4g}") if abs(v) < 1 else round(v, 4)


def format_number(v: Any) -> str:
    """``v`` as text by the module's rule: integers with thousands separators, floats below 1 with 4
    significant digits, others with at most 4 decimals (trailing zeros dropped); anything else ``str(v)``."""
    if isinstance(v, np.generic):
        v = v.item()
    if isinstance(v, bool) or v is None:
        return str(v)
    if isinstance(v, int):
        return f"{v:,}"
    if isinstance(v, float):
        if v.is_integer() and abs(v) >= 1:
            return f"{int(v):,}"
        return f"{v:.4g}" if abs(v) < 1 else f"{v:,.4f}".rstrip("0").rstrip(".")
    return str(v)
