"""Provisional labels: a guessed name for a component from its card's evidence alone (top tokens, source
mix, number of documents, size), always worded as a guess, never invented semantics. A component that is
one model input repeated (``n_inputs == 1``) is named as the artefact it is, not guessed at."""

from __future__ import annotations

import unicodedata
from collections.abc import Mapping
from typing import Any, Protocol

from actgeo_assets.lib.analysis.tokens import quote_token


class Evidence(Protocol):
    """A card (``analysis.cards.Card``): its evidence as a plain dict."""

    def to_dict(self) -> dict[str, Any]: ...


def token_kind(tok: str) -> str:
    """A surface description of the token's characters (never its meaning)."""
    if tok and tok.isspace():
        return " separators" if ("\n" in tok or "\r" in tok) else " whitespace"
    stripped = tok.strip()
    if stripped and all(unicodedata.category(c).startswith(("P", "S")) for c in stripped):
        return " punctuation"
    if stripped and stripped.isdigit():
        return " digits"
    return ""


#: How a dominant source is named in labels; other sources by their own name.
SOURCE_NAMES = {"Github": "Github code"}

#: Label rules (shares are of the component's size).
DOMINANT_TOKEN_SHARE = 0.5  # one token this common names the component
PAIR_TOKEN_SHARE = 0.5  # else two tokens together this common, each >= PAIR_MIN_SHARE
PAIR_MIN_SHARE = 0.15
SOURCE_ONLY_SHARE = 0.8  # "in S"
SOURCE_MOSTLY_SHARE = 0.5  # "mostly in S"; below: "across n sources"
FEW_DOCUMENTS = 3  # 2..FEW_DOCUMENTS documents are said ("only 3 documents")


def provisional_label(card_evidence: Evidence | Mapping[str, Any]) -> str:
    """A guessed label from the evidence only: top tokens, source mix, number of documents, size.

    Rules (shares are counts / size):

    - *what*: the top token if its share >= 0.5 (``' self'``), suffixed by a surface kind of its characters
      (``separators`` for whitespace with a line break, ``whitespace``, ``punctuation``, ``digits``);
      else the top two tokens (``'told'/'said'``) if together >= 0.5 and each >= 0.15;
      else ``mixed tokens, top 'x' 23%``.
    - *where*: one document -> ``from one document (S)``; top source share >= 0.8 -> ``in S``;
      >= 0.5 -> ``mostly in S``; else ``across n sources``. ``Github`` is written ``Github code``.
      With 2..3 documents, ``, only n documents`` is added.
    - always ends in `` (guess)``.

    Except: a component of ``size >= 2`` whose members are ONE model input (``n_inputs == 1``) is labelled
    :func:`one_input_label` (no guess: it is ``size`` copies of one activation, not a cluster).
    """
    ev = card_evidence.to_dict() if hasattr(card_evidence, "to_dict") else dict(card_evidence)
    if ev.get("n_inputs") == 1 and int(ev.get("size") or 0) >= 2:
        return one_input_label(ev)
    top = [(str(t), int(c)) for t, c in ev.get("top_tokens", [])]
    mix = sorted(((str(s), int(c)) for s, c in dict(ev.get("source_mix", {})).items()), key=lambda x: -x[1])
    size = int(ev.get("size") or sum(c for _, c in mix) or sum(c for _, c in top))
    n_docs = int(ev.get("n_documents", 0))
    if size <= 0 or not top:
        raise ValueError("provisional_label: evidence has no tokens (size 0 or empty top_tokens)")

    (t1, c1) = top[0]
    s1 = c1 / size
    if s1 >= DOMINANT_TOKEN_SHARE:
        what = quote_token(t1) + token_kind(t1)
    elif len(top) > 1 and (c1 + top[1][1]) / size >= PAIR_TOKEN_SHARE and top[1][1] / size >= PAIR_MIN_SHARE:
        what = f"{quote_token(t1)}/{quote_token(top[1][0])}"
    else:
        what = f"mixed tokens, top {quote_token(t1)} {round(100 * s1)}%"

    src, src_n = mix[0] if mix else ("unknown source", size)
    src_name = SOURCE_NAMES.get(src, src)
    src_share = src_n / size
    if n_docs == 1:
        where = f"from one document ({src})"
    else:
        if src_share >= SOURCE_ONLY_SHARE:
            where = f"in {src_name}"
        elif src_share >= SOURCE_MOSTLY_SHARE:
            where = f"mostly in {src_name}"
        else:
            where = f"across {len(mix)} sources"
        if 2 <= n_docs <= FEW_DOCUMENTS:
            where += f", only {n_docs} documents"
    return f"{what} {where} (guess)"


def one_input_label(ev: Mapping[str, Any]) -> str:
    """The label of a component that is one model input repeated ``size`` times, e.g. ``one model input
    repeated ×10 ('    ' at position 1): an artefact, not a cluster`` (the token and position from the top
    token and the first context, when the evidence has them)."""
    size = int(ev.get("size") or 0)
    top = [str(t) for t, _ in ev.get("top_tokens", [])]
    contexts = list(ev.get("contexts") or [])
    position = contexts[0].get("position") if contexts and isinstance(contexts[0], Mapping) else None
    what = ""
    if top:
        what = f" ({quote_token(top[0])}" + (f" at position {int(position)}" if position is not None else "") + ")"
    return f"one model input repeated \u00d7{size:,}{what}: an artefact, not a cluster"
