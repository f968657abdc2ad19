"""Token text on the cards: a member token's context window, quoting a token in a label, the token
table's checks, and the token that follows each row in the corpus.

Windows show the document text around a member token with newlines, carriage returns and tabs replaced
by visible glyphs; quoted tokens escape control characters as a Python string literal would.
"""

from __future__ import annotations

import unicodedata
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from actgeo_assets.lib.config.constants import TOKEN_COLUMNS

#: Characters each side of the highlighted span in a context window.
CONTEXT_CHARS = 80

# Shown instead of invisible characters in context windows (one visible glyph per character).
_VISIBLE = {"\n": "\u21b5", "\r": "\u240d", "\t": "\u21e5"}
# Escapes used inside quoted tokens in labels (as in a Python string literal).
_ESCAPES = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}


@dataclass
class Context:
    """One occurrence of a member token in its document.

    ``left + token + right`` is the document text from ``char_start - len(left)`` to ``char_end + len(right)``
    with newlines, carriage returns and tabs replaced by visible glyphs (``↵``, ``␍``, ``⇥``) and ``…`` added
    where the window was cut. ``token`` is the exact character span ``text[char_start:char_end]`` (the token
    table's text when the span is empty, e.g. a special token).
    """

    doc_id: Any
    source: str
    token: str
    left: str
    right: str
    cosine_to_mean: float
    row: int
    position: int
    char_start: int
    char_end: int


def visible(text: str) -> str:
    """``text`` with newline, carriage return and tab replaced by visible glyphs (same length)."""
    for k, v in _VISIBLE.items():
        text = text.replace(k, v)
    return text


def select_contexts(cosines: np.ndarray, doc_ids: np.ndarray, k: int, inputs: np.ndarray | None = None) -> np.ndarray:
    """Positions (into ``cosines``) of ``k`` representative members: central and diverse.

    Members are ranked by cosine to the mean direction, descending (ties: lower position first). The first
    pass takes the most central member of each distinct document, in that order, until ``k`` are chosen;
    if there are fewer than ``k`` documents, the most central remaining members fill up. Returns int64
    [min(k, m)] in selection order (distinct documents first, each pass by descending cosine).

    ``inputs`` (optional, one model-input key per member: :func:`~.inputs.input_keys`): only the most central
    member of each distinct model input is a candidate, so no input is shown twice (a component of one input
    repeated shows one context); fewer than ``k`` come back when there are fewer distinct inputs.
    """
    order = np.lexsort((np.arange(cosines.size), -cosines))
    if inputs is not None:
        keys = np.asarray(inputs)
        if keys.shape != np.shape(cosines):
            raise ValueError(f"inputs has shape {keys.shape}, cosines {np.shape(cosines)}: one key per member")
        order = order[~pd.Series(keys[order]).duplicated().to_numpy()]
    docs_sorted = pd.Series(np.asarray(doc_ids, dtype=object)[order])
    first = ~docs_sorted.duplicated().to_numpy()
    picked = order[first][:k]
    if picked.size < k:
        rest = order[~first][: k - picked.size]
        picked = np.concatenate([picked, rest])
    return picked.astype(np.int64)


def token_context(doc_text: str | None, tok: Mapping[str, Any], cos: float, chars: int) -> Context:
    """The :class:`Context` of one token row (``char_start``/``char_end`` into its document's text): up to
    ``chars`` characters on each side, the member token itself, and its cosine ``cos`` to the card's direction."""
    cs, ce = int(tok["char_start"]), int(tok["char_end"])
    if doc_text is None:
        left = right = ""
        span = str(tok["token"])
    else:
        span = doc_text[cs:ce] if ce > cs else str(tok["token"])
        lo, hi = max(0, cs - chars), min(len(doc_text), ce + chars)
        left = ("\u2026" if lo > 0 else "") + doc_text[lo:cs]
        right = doc_text[ce:hi] + ("\u2026" if hi < len(doc_text) else "")
    return Context(
        doc_id=plain_python(tok["doc_id"]),
        source=str(tok["source"]),
        token=visible(span),
        left=visible(left),
        right=visible(right),
        cosine_to_mean=round(float(cos), 6),
        row=int(tok["row"]),
        position=int(tok["position"]),
        char_start=cs,
        char_end=ce,
    )


def plain_python(v: Any) -> Any:
    """A numpy scalar (or 0-d array) as the plain Python value (for JSON and HTML); anything else unchanged."""
    if isinstance(v, np.generic) or (isinstance(v, np.ndarray) and v.ndim == 0):
        return v.item()
    return v


def quote_token(tok: str, max_len: int = 24) -> str:
    """``tok`` in single quotes with ``\\n``, ``\\r``, ``\\t`` and other control characters escaped.

    >>> quote_token(" self"), quote_token("\\n\\n")
    ("' self'", "'\\\\n\\\\n'")
    """
    out = []
    for ch in tok:
        if ch in _ESCAPES:
            out.append(_ESCAPES[ch])
        elif unicodedata.category(ch) in ("Cc", "Cf"):
            out.append(f"\\x{ord(ch):02x}" if ord(ch) < 256 else f"\\u{ord(ch):04x}")
        else:
            out.append(ch)
    s = "".join(out)
    if len(s) > max_len:
        s = s[: max_len - 1] + "\u2026"
    return f"'{s}'"


def prepare_tokens(tokens: pd.DataFrame, n: int) -> pd.DataFrame:
    """The run's token table (TOKEN_COLUMNS, one row per activation, ``n`` rows), checked and sorted by row."""
    missing = [c for c in TOKEN_COLUMNS if c not in tokens.columns]
    if missing:
        raise ValueError(f"tokens table lacks columns {missing} (has {list(tokens.columns)})")
    if len(tokens) != n:
        raise ValueError(f"tokens table has {len(tokens)} rows but labels has {n}")
    row = tokens["row"].to_numpy()
    if not np.array_equal(row, np.arange(n)):
        tokens = tokens.sort_values("row", kind="stable").reset_index(drop=True)
        if not np.array_equal(tokens["row"].to_numpy(), np.arange(n)):
            raise ValueError("tokens['row'] must be a permutation of 0..N-1 (global row order)")
    return tokens


def next_token_column(tokens: pd.DataFrame) -> pd.Series:
    """The token string at ``position + 1`` of the same document for each row of ``tokens`` (object; None
    where that token is not in the table: the captured context ended, or the row after it was not
    captured). Index-aligned with ``tokens``."""
    key = tokens[["doc_id", "position"]].copy()
    following = pd.DataFrame({"doc_id": tokens["doc_id"].to_numpy(), "position": tokens["position"].to_numpy() - 1,
                              "next_token": tokens["token"].to_numpy()}).drop_duplicates(["doc_id", "position"])
    merged = key.merge(following, on=["doc_id", "position"], how="left")
    out = np.array(merged["next_token"].to_numpy(dtype=object), dtype=object)  # a writable copy
    out[pd.isna(out)] = None
    return pd.Series(out, index=tokens.index, dtype=object, name="next_token")
