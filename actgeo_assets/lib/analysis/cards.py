"""Component cards: what a reader sees of one connected component.

A card holds the evidence about one component of the cosine-threshold graph -- its size, how many
documents and which sources its tokens come from, its most frequent tokens and how pure it is in them (the
token-identity baseline), a few representative contexts with the exact token highlighted, what follows its
tokens (the next tokens in the corpus, and the model's own next-token predictions at up to
:data:`READOUT_MEMBERS` member positions), optionally a mid-depth logit lens of its direction relative to
the corpus mean -- and a *provisional* label derived from that evidence alone (worded as a guess, never
invented semantics). Special and unused tokens (``<bos>``, ``<unused752>``, ...) are never shown.

Inputs:

- ``labels``: ``np.ndarray[int64]`` of shape ``[N]``, canonical (0 = largest, sizes non-increasing, dense).
- ``rows``: the unit rows ``float32 [N, d]``, given either as a callable mapping global row indices
  (``int64 [m]``, ascending) to ``[m, d]`` rows, or as a sequence of ``(offset, array)`` shards (for example
  memory-mapped ``.npy`` files) whose concatenation in offset order is the full matrix. Nothing here ever
  concatenates the shards.
- ``tokens``: one row per activation in global row order, columns :data:`TOKEN_COLUMNS` (``row, doc_id,
  position, token_id, token, char_start, char_end, source``), optionally ``next_token`` (the token at
  ``position + 1`` of the same document, None where the captured context ended: :func:`next_token_column`).
- ``docs``: ``doc_id, source, text``.

Everything scales to N = 1e6: members of all requested components come from one ``argsort``; means and
cosines are computed in chunks so even a card of the giant never materializes its rows at once.
"""

from __future__ import annotations

import logging
import re
import unicodedata
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from actgeo_assets.lib.config.constants import TOKEN_COLUMNS
from actgeo_assets.lib.graph import canonical_labels

log = logging.getLogger(__name__)

#: Maps global row indices (int64 [m], ascending) to rows ([m, d]).
RowGetter = Callable[[np.ndarray], np.ndarray]
#: Either a :data:`RowGetter` or shards ``[(offset, array[n_i, d]), ...]``.
RowsSource = RowGetter | Sequence[tuple[int, np.ndarray]]
#: The model's next-token distribution at global rows: ``rows int64 [m] -> [m]`` lists of ``(token id,
#: probability)``, most probable first, special tokens left out.
Predictor = Callable[[np.ndarray], Sequence[Sequence[tuple[int, float]]]]

#: Members per card whose next-token predictions the model is asked for: a sample evenly spaced over the
#: members in row order when a component is larger (the card says how many were read).
READOUT_MEMBERS = 32
#: Entries of each next-token list on a card (corpus, model, lens).
NEXT_TOKENS = 8

#: Characters each side of the highlighted span in a context window.
CONTEXT_CHARS = 80
#: Rows per chunk when reducing over a component's members.
CHUNK_ROWS = 65_536
#: Tokens kept in ``Card.top_tokens``.
TOP_TOKENS = 10

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


@dataclass(frozen=True)
class Readout:
    """What the cards' model readouts need; each part is optional.

    - ``predict``: the model's own next-token distribution at given rows (:data:`Predictor`): the card shows
      its average over up to ``members`` member positions.
    - ``final_norm`` (a callable on a ``[1, d]`` tensor), ``unembed`` (``[V, d]``) and ``center`` (float
      ``[d]``, the corpus mean raw activation): the mid-depth logit lens of the component's mean raw
      activation minus ``center``. Without ``center`` there is no lens: the raw mean is dominated by the
      corpus mean (cosine ~0.98 on the demo) and reads as noise.
    - ``tokenizer`` turns ids into text (see :func:`next_token_readout`); ``hidden``: token ids never
      shown (:func:`hidden_token_ids`).
    """

    predict: Predictor | None = None
    final_norm: Callable[[Any], Any] | None = None
    unembed: Any = None
    center: np.ndarray | None = None
    tokenizer: Any = None
    hidden: frozenset[int] = frozenset()
    members: int = READOUT_MEMBERS
    softcap: float | None = None


@dataclass
class Card:
    """Evidence about one component. ``rank`` is 1-based (rank 1 = the giant); ``label_id = rank - 1``
    for components of the whole graph. ``source_mix`` and ``top_tokens`` are ordered by count, descending.
    ``subcomponent_of`` is set (to the parent's rank) on cards of the giant's sub-components.

    What follows the member tokens: ``next_tokens``, the tokens at ``position + 1`` of the same documents
    in the corpus with counts (``n_next_unknown`` members had none: their captured context ended there);
    ``model_next``, the model's own next-token predictions at ``model_next_members`` member positions as
    ``(token, mean probability, members where it is the top prediction)``, by mean probability
    (probabilities outside a member's top :data:`TOP_PREDICTIONS` count as 0; tokens under 0.5% that are no
    member's top prediction are left out); ``readout``, the
    mid-depth logit lens of the mean raw member activation minus the corpus mean, ``(token, logit)``.
    Token-identity baseline: ``token_purity`` is the share of members whose token string is the most
    frequent one, ``n_distinct_tokens`` the number of distinct token strings (``n_documents``: distinct
    documents)."""

    rank: int
    label_id: int
    size: int
    provisional_label: str
    n_documents: int
    source_mix: dict[str, int]
    top_tokens: list[tuple[str, int]]
    contexts: list[Context]
    readout: list[tuple[str, float]] | None
    threshold: float
    subcomponent_of: int | None = None
    extra: dict[str, Any] = field(default_factory=dict)
    token_purity: float | None = None
    n_distinct_tokens: int | None = None
    next_tokens: list[tuple[str, int]] | None = None
    n_next_unknown: int = 0
    model_next: list[tuple[str, float, int]] | None = None
    model_next_members: int = 0

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-serializable dict (tuples become lists)."""
        d = asdict(self)
        d["top_tokens"] = [[t, int(c)] for t, c in self.top_tokens]
        d["readout"] = None if self.readout is None else [[t, float(v)] for t, v in self.readout]
        d["next_tokens"] = None if self.next_tokens is None else [[t, int(c)] for t, c in self.next_tokens]
        d["model_next"] = (None if self.model_next is None
                           else [[t, float(p), int(n)] for t, p, n in self.model_next])
        return d

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Card:
        """Inverse of :meth:`to_dict`."""
        d = dict(d)
        d["contexts"] = [Context(**c) for c in d.get("contexts", [])]
        d["top_tokens"] = [(str(t), int(c)) for t, c in d.get("top_tokens", [])]
        ro = d.get("readout")
        d["readout"] = None if ro is None else [(str(t), float(v)) for t, v in ro]
        nt = d.get("next_tokens")
        d["next_tokens"] = None if nt is None else [(str(t), int(c)) for t, c in nt]
        mn = d.get("model_next")
        d["model_next"] = None if mn is None else [(str(t), float(p), int(n)) for t, p, n in mn]
        d["source_mix"] = {str(k): int(v) for k, v in d.get("source_mix", {}).items()}
        return cls(**d)


class CardList(list[Card]):
    """A list of cards plus ``notes``: human-readable remarks (e.g. requested ranks that do not exist)."""

    def __init__(self, cards: list[Card] | None = None, notes: list[str] | None = None) -> None:
        super().__init__(cards or [])
        self.notes: list[str] = list(notes or [])


# --------------------------------------------------------------------------------------------------
# rows


def row_getter(rows: RowsSource) -> RowGetter:
    """Normalize ``rows`` to a callable ``idx int64 [m] -> float [m, d]``.

    With shards ``[(offset, array), ...]`` global row ``g`` is ``array[g - offset]`` of the shard whose
    ``offset <= g < offset + len(array)``. Shards must not overlap. Indices out of range raise IndexError.
    An ``array`` may be a memory map or any object with ``len``, ``shape``, ``dtype`` and integer-array
    indexing (the pipeline's view of a shard's kept raw rows is one).
    """
    if callable(rows):
        return rows
    shards = sorted(((int(o), a) for o, a in rows), key=lambda s: s[0])
    if not shards:
        raise ValueError("rows: no shards given")
    offsets = np.array([o for o, _ in shards], dtype=np.int64)
    ends = offsets + np.array([len(a) for _, a in shards], dtype=np.int64)
    if np.any(offsets[1:] < ends[:-1]):
        raise ValueError(f"rows: shards overlap (offsets {offsets.tolist()}, ends {ends.tolist()})")

    def get(idx: np.ndarray) -> np.ndarray:
        idx = np.asarray(idx, dtype=np.int64)
        which = np.searchsorted(offsets, idx, side="right") - 1
        bad = (which < 0) | (idx >= ends[np.clip(which, 0, None)])
        if np.any(bad):
            raise IndexError(f"rows: global indices outside every shard, first: {idx[bad][:5].tolist()}")
        d = shards[0][1].shape[1]
        out = np.empty((idx.size, d), dtype=np.result_type(*[a.dtype for _, a in shards]))
        for s in np.unique(which):
            sel = which == s
            off, arr = shards[s]
            out[sel] = arr[idx[sel] - off]
        return out

    return get


def chunked_mean(get: RowGetter, members: np.ndarray, chunk: int = CHUNK_ROWS) -> np.ndarray:
    """float64 [d] mean of rows ``members`` (read in chunks)."""
    total: np.ndarray | None = None
    for s in range(0, members.size, chunk):
        block = np.asarray(get(members[s : s + chunk]), dtype=np.float64).sum(axis=0)
        total = block if total is None else total + block
    assert total is not None
    return total / members.size


def cosines_to_direction(get: RowGetter, members: np.ndarray, direction: np.ndarray,
                         chunk: int = CHUNK_ROWS) -> np.ndarray:
    """float64 [m] cosine of each member row to ``direction`` (rows need not be unit)."""
    norm = float(np.linalg.norm(direction))
    unit = direction / norm if norm > 0 else direction
    out = np.empty(members.size, dtype=np.float64)
    for s in range(0, members.size, chunk):
        block = np.asarray(get(members[s : s + chunk]), dtype=np.float64)
        rn = np.linalg.norm(block, axis=1)
        rn[rn == 0] = 1.0
        out[s : s + chunk] = (block @ unit) / rn
    return out


# --------------------------------------------------------------------------------------------------
# contexts and selection


def visible(text: str) -> str:
    """``text`` with newline, carriage return and tab replaced by visible glyphs (same length)."""
    for k, v in _VISIBLE.items():
        text = text.replace(k, v)
    return text


def select_contexts(cosines: np.ndarray, doc_ids: np.ndarray, k: int) -> np.ndarray:
    """Positions (into ``cosines``) of ``k`` representative members: central and diverse.

    Members are ranked by cosine to the mean direction, descending (ties: lower position first). The first
    pass takes the most central member of each distinct document, in that order, until ``k`` are chosen;
    if there are fewer than ``k`` documents, the most central remaining members fill up. Returns int64
    [min(k, m)] in selection order (distinct documents first, each pass by descending cosine).
    """
    order = np.lexsort((np.arange(cosines.size), -cosines))
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


# --------------------------------------------------------------------------------------------------
# provisional labels


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


def _token_kind(tok: str) -> str:
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


def provisional_label(card_evidence: Card | Mapping[str, Any]) -> str:
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
    """
    ev = card_evidence.to_dict() if isinstance(card_evidence, Card) else dict(card_evidence)
    top = [(str(t), int(c)) for t, c in ev.get("top_tokens", [])]
    mix = sorted(((str(s), int(c)) for s, c in dict(ev.get("source_mix", {})).items()), key=lambda x: -x[1])
    size = int(ev.get("size") or sum(c for _, c in mix) or sum(c for _, c in top))
    n_docs = int(ev.get("n_documents", 0))
    if size <= 0 or not top:
        raise ValueError("provisional_label: evidence has no tokens (size 0 or empty top_tokens)")

    (t1, c1) = top[0]
    s1 = c1 / size
    if s1 >= DOMINANT_TOKEN_SHARE:
        what = quote_token(t1) + _token_kind(t1)
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


# --------------------------------------------------------------------------------------------------
# readout


#: Entries of each member's next-token distribution a :data:`Predictor` returns (and caches).
TOP_PREDICTIONS = 10

_SPECIAL_TEXT = re.compile(r"<[^<>\s]+>|\[[^\[\]\s]+\]")


def hidden_token_ids(tokenizer: Any) -> frozenset[int]:
    """Token ids a card never shows: the tokenizer's special tokens and its added control tokens
    (``<unused752>``, ``<start_of_image>``, ``[multimodal]``, ...); added plain text such as ``"\\n\\n"``
    stays visible."""
    ids = {int(i) for i in getattr(tokenizer, "all_special_ids", []) or []}
    for i, tok in (getattr(tokenizer, "added_tokens_decoder", None) or {}).items():
        content = str(getattr(tok, "content", tok))
        if getattr(tok, "special", False) or _SPECIAL_TEXT.fullmatch(content):
            ids.add(int(i))
    return frozenset(ids)


def next_token_readout(
    direction: np.ndarray,
    final_norm: Callable[[Any], Any],
    unembed: Any,
    tokenizer: Any,
    k: int = NEXT_TOKENS,
    softcap: float | None = None,
    hidden: Collection[int] = (),
) -> list[tuple[str, float]]:
    """Top-``k`` logits of a residual-stream direction read through the model's final norm and unembedding:
    a logit lens. On a card ``direction`` is the component's mean raw activation minus the corpus mean at the
    captured (mid-depth) layer, so the lens shows what distinguishes the component, not the corpus mean.

    ``final_norm`` is the model's final norm (a callable on a ``[1, d]`` tensor), ``unembed`` the
    unembedding (torch tensor or array ``[V, d]``); with ``softcap`` (Gemma 2's ``final_logit_softcapping``)
    logits become ``softcap * tanh(logits / softcap)`` (order unchanged). Token ids in ``hidden`` are
    never returned. ``tokenizer`` turns ids into text: an object with ``decode([id])``, a callable
    ``id -> str``, a sequence indexed by id, or None (``"#id"``). Returns ``[(token, logit), ...]`` by
    logit, descending.
    """
    import torch

    w = torch.as_tensor(unembed)
    x = torch.as_tensor(np.asarray(direction), dtype=w.dtype).reshape(1, -1)
    if x.shape[1] != w.shape[1]:
        raise ValueError(f"direction has {x.shape[1]} dims but unembed is {tuple(w.shape)} ([V, d])")
    with torch.no_grad():
        h = final_norm(x)
        logits = (h.to(w.dtype) @ w.T).reshape(-1).double()
        if softcap:
            logits = softcap * torch.tanh(logits / softcap)
        if hidden:
            logits[torch.as_tensor(sorted(hidden), dtype=torch.long)] = -torch.inf
        vals, ids = torch.topk(logits, min(k, logits.numel() - len(hidden)))
    return [(_decode(tokenizer, int(i)), float(v)) for v, i in zip(vals, ids, strict=True)]


def readout_sample(members: np.ndarray, cap: int = READOUT_MEMBERS) -> np.ndarray:
    """The members whose next-token predictions are read: all of them up to ``cap``, else ``cap`` evenly
    spaced over the members in row order (deterministic)."""
    members = np.asarray(members, dtype=np.int64)
    if members.size <= cap:
        return members
    return members[np.unique(np.linspace(0, members.size - 1, cap).round().astype(np.int64))]


def readout_rows(labels: np.ndarray, ranks: tuple[int, int], rows: np.ndarray | None = None,
                 cap: int = READOUT_MEMBERS) -> np.ndarray:
    """The global rows (sorted) whose next-token predictions the cards of size ranks ``ranks`` read, so a
    caller can fetch them together with others in one batched pass. ``labels``: canonical labels of
    ``rows`` (ascending global rows; default ``0..N-1``), e.g. the giant's sub-component labels for
    :func:`giant_subcards` (canonicalized over its members in row order)."""
    labels = np.asarray(labels)
    rows = np.arange(labels.size, dtype=np.int64) if rows is None else np.asarray(rows, dtype=np.int64)
    n_comp = int(labels.max()) + 1 if labels.size else 0
    wanted = np.arange(int(ranks[0]) - 1, min(int(ranks[1]), n_comp), dtype=np.int64)
    members = _members_by_label(labels, wanted) if wanted.size else {}
    picked = [readout_sample(rows[members[int(w)]], cap) for w in wanted]
    return np.unique(np.concatenate([np.zeros(0, dtype=np.int64), *picked]))


def summarize_predictions(predictions: Sequence[Sequence[tuple[int, float]]], tokenizer: Any,
                          k: int = NEXT_TOKENS, min_prob: float = 0.005) -> list[tuple[str, float, int]]:
    """``[(token, mean probability, members where it is the top prediction), ...]``: the average of the
    members' next-token distributions (each its top entries; a token outside a member's list counts 0
    there), the ``k`` most probable, ties by token id; tokens under ``min_prob`` that are no member's top
    prediction are left out (the most probable always stays)."""
    m = len(predictions)
    if m == 0:
        return []
    total: dict[int, float] = {}
    top1: dict[int, int] = {}
    for dist in predictions:
        for i, (tid, prob) in enumerate(dist):
            total[int(tid)] = total.get(int(tid), 0.0) + float(prob)
            if i == 0:
                top1[int(tid)] = top1.get(int(tid), 0) + 1
    best = sorted(total, key=lambda t: (-total[t], t))[:k]
    best = [t for i, t in enumerate(best) if i == 0 or total[t] / m >= min_prob or top1.get(t, 0)]
    return [(_decode(tokenizer, t), total[t] / m, top1.get(t, 0)) for t in best]


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


def _decode(tokenizer: Any, i: int) -> str:
    if tokenizer is None:
        return f"#{i}"
    if hasattr(tokenizer, "decode"):
        return str(tokenizer.decode([i]))
    if callable(tokenizer):
        return str(tokenizer(i))
    return str(tokenizer[i])


# --------------------------------------------------------------------------------------------------
# the token-identity baseline

#: A component is "mixed" (spans several distinct tokens) when its most frequent token string is under
#: this share of its members (the provisional label then says "mixed tokens").
MIXED_PURITY = 0.5
#: Largest mixed components listed in the baseline.
MIXED_LISTED = 10
#: Adjusted mutual information is skipped above this many (token strings x components) cells (its
#: expected-value term costs about that much).
AMI_MAX_CELLS = 50_000_000


def component_token_stats(labels: np.ndarray, tokens: pd.DataFrame) -> pd.DataFrame:
    """One row per component (index: label, ascending): ``size``, ``top_token`` (most frequent token string,
    ties by string), ``token_purity`` (its share of the members), ``n_distinct_tokens``, ``n_documents``.
    ``tokens`` is in global row order (``token`` and ``doc_id`` columns), ``labels`` canonical."""
    labels = np.asarray(labels, dtype=np.int64)
    df = pd.DataFrame({"label": labels, "token": tokens["token"].astype(str).to_numpy(),
                       "doc": tokens["doc_id"].to_numpy()})
    tc = df.groupby(["label", "token"], sort=False).size().rename("count").reset_index()
    tc = tc.sort_values(["label", "count", "token"], ascending=[True, False, True], kind="stable")
    first = tc.drop_duplicates("label").set_index("label")
    out = pd.DataFrame({"size": np.bincount(labels)}) if labels.size else pd.DataFrame({"size": []})
    out["top_token"] = first["token"].reindex(out.index)
    out["token_purity"] = first["count"].reindex(out.index) / out["size"]
    out["n_distinct_tokens"] = tc.groupby("label").size().reindex(out.index).fillna(0).astype(np.int64)
    out["n_documents"] = df.groupby("label")["doc"].nunique().reindex(out.index).fillna(0).astype(np.int64)
    return out


def token_baseline(labels: np.ndarray, tokens: pd.DataFrame, stats: pd.DataFrame | None = None,
                   listed: int = MIXED_LISTED) -> dict[str, Any]:
    """How much of the partition is "same token string": the token-identity baseline of a run (JSON).

    Over the non-singleton components besides the largest (the small components; ``n_small``):
    ``share_one_token`` (one token string), ``share_majority_token`` (token purity >= 0.5),
    ``share_one_document``, ``mean_token_purity``. Over their members (``n_members``, ``n_token_strings``):
    the agreement of the partition with grouping by token string, scikit-learn's ``homogeneity`` (each
    component holds one token string), ``completeness`` (each token string lies in one component),
    ``v_measure`` and ``ami`` (adjusted mutual information; None above :data:`AMI_MAX_CELLS`, said in
    ``notes``). ``mixed``: the largest small components whose top token is under :data:`MIXED_PURITY` of
    their members (rank, size, purity, distinct tokens, documents, top tokens, sources), ``n_mixed`` all
    of them."""
    from sklearn.metrics import adjusted_mutual_info_score, homogeneity_completeness_v_measure

    labels = np.asarray(labels, dtype=np.int64)
    stats = component_token_stats(labels, tokens) if stats is None else stats
    small = stats[(stats.index > 0) & (stats["size"] > 1)]
    out: dict[str, Any] = {"n_components": len(stats), "n_small": len(small), "notes": []}
    if len(small):
        out.update(share_one_token=float((small["n_distinct_tokens"] == 1).mean()),
                   share_majority_token=float((small["token_purity"] >= MIXED_PURITY).mean()),
                   share_one_document=float((small["n_documents"] == 1).mean()),
                   mean_token_purity=float(small["token_purity"].mean()))
    members = np.flatnonzero(np.isin(labels, small.index.to_numpy()))
    strings = tokens["token"].astype(str).to_numpy()[members]
    n_strings = len(set(strings.tolist()))
    out.update(n_members=int(members.size), n_token_strings=n_strings)
    if members.size:
        h, c, v = homogeneity_completeness_v_measure(strings, labels[members])
        out.update(homogeneity=float(h), completeness=float(c), v_measure=float(v))
        if n_strings * len(small) <= AMI_MAX_CELLS:
            out["ami"] = float(adjusted_mutual_info_score(strings, labels[members]))
        else:
            out["ami"] = None
            out["notes"].append(f"adjusted mutual information skipped: {n_strings:,} token strings x "
                                f"{len(small):,} components is above {AMI_MAX_CELLS:,}")
    mixed = small[small["token_purity"] < MIXED_PURITY]
    out["n_mixed"] = len(mixed)
    listed_labels = mixed.index.to_numpy()[:listed]  # canonical labels: larger components first
    groups = _members_by_label(labels, listed_labels) if len(listed_labels) else {}
    out["mixed"] = []
    for lab in listed_labels:
        tok = tokens.iloc[groups[int(lab)]]
        vc = tok["token"].astype(str).value_counts(sort=False)
        top = sorted(((str(t), int(n)) for t, n in vc.items()), key=lambda x: (-x[1], x[0]))[:5]
        sm = tok["source"].astype(str).value_counts(sort=False)
        srcs = sorted(((str(t), int(n)) for t, n in sm.items()), key=lambda x: (-x[1], x[0]))[:3]
        row = stats.loc[lab]
        out["mixed"].append({"rank": int(lab) + 1, "size": int(row["size"]),
                             "token_purity": float(row["token_purity"]),
                             "n_distinct_tokens": int(row["n_distinct_tokens"]),
                             "n_documents": int(row["n_documents"]), "top_tokens": top, "sources": srcs})
    return out


# --------------------------------------------------------------------------------------------------
# cards


def _counted(values: pd.Series) -> list[tuple[str, int]]:
    """``(value, count)`` of a column, most frequent first, ties by value."""
    vc = values.astype(str).value_counts(sort=False)
    return sorted(((str(v), int(c)) for v, c in vc.items()), key=lambda x: (-x[1], x[0]))


def member_counts(tok: pd.DataFrame) -> tuple[list[tuple[str, int]], dict[str, int], list[tuple[str, int]] | None, int]:
    """A component's members' token rows -> their token strings with counts (most first, ties by string), the
    source mix, the next tokens in the corpus (top NEXT_TOKENS; None without a ``next_token`` column) and how
    many members have no next token (the document ends there)."""
    counts = _counted(tok["token"])
    source_mix = dict(_counted(tok["source"]))
    next_tokens, n_unknown = None, 0
    if "next_token" in tok.columns:
        nxt = tok["next_token"]
        known = nxt[nxt.notna()]
        n_unknown = int(len(nxt) - len(known))
        next_tokens = _counted(known)[:NEXT_TOKENS]
    return counts, source_mix, next_tokens, n_unknown


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


def _build_from_groups(
    groups: Sequence[tuple[int, int, np.ndarray]],
    rows: RowsSource,
    tokens: pd.DataFrame,
    docs: pd.DataFrame,
    *,
    contexts_per_card: int,
    threshold: float,
    readout: Readout | None,
    raw_rows: RowsSource | None,
    subcomponent_of: int | None,
    context_chars: int,
    notes: list[str],
) -> CardList:
    """Cards for ``groups = [(rank, label_id, members int64 [m] ascending global rows), ...]``, with
    ``notes`` (each also logged)."""
    for note in notes:
        log.info("%s: %s", "giant_subcards" if subcomponent_of else "build_cards", note)
    get = row_getter(rows)
    raw_get = row_getter(raw_rows) if raw_rows is not None else None
    texts = dict(zip(docs["doc_id"].tolist(), docs["text"].tolist(), strict=True))
    cards = CardList(notes=notes)
    # the model's next-token predictions at a sample of each group's members: one call for all groups
    samples: list[np.ndarray] = []
    predictions: dict[int, Sequence[tuple[int, float]]] = {}
    if readout is not None and readout.predict is not None:
        samples = [readout_sample(members, readout.members) for _, _, members in groups]
        wanted = np.unique(np.concatenate([np.zeros(0, dtype=np.int64), *samples]))
        if wanted.size:
            predictions = dict(zip(wanted.tolist(), readout.predict(wanted), strict=True))
    lens = (readout is not None and readout.final_norm is not None and readout.unembed is not None
            and readout.center is not None and raw_get is not None)
    for g, (rank, label_id, members) in enumerate(groups):
        tok = tokens.iloc[members]
        mean = chunked_mean(get, members)
        cos = cosines_to_direction(get, members, mean)
        pick = select_contexts(cos, tok["doc_id"].to_numpy(), contexts_per_card)
        picked = tok.iloc[pick]
        contexts = [
            token_context(texts.get(plain_python(r["doc_id"])), r, c, context_chars)
            for r, c in zip(picked.to_dict("records"), cos[pick], strict=True)
        ]
        counts, source_mix, next_tokens, n_unknown = member_counts(tok)
        top = counts[:TOP_TOKENS]
        model_next, n_read = None, 0
        if predictions:
            assert readout is not None
            model_next = summarize_predictions([predictions[int(r)] for r in samples[g]], readout.tokenizer)
            n_read = int(samples[g].size)
        ro = None
        if lens:
            assert readout is not None and raw_get is not None and readout.center is not None
            direction = chunked_mean(raw_get, members) - np.asarray(readout.center, dtype=np.float64)
            ro = next_token_readout(direction, readout.final_norm, readout.unembed, readout.tokenizer,  # type: ignore[arg-type]
                                    softcap=readout.softcap, hidden=readout.hidden)
        card = Card(
            rank=int(rank),
            label_id=int(label_id),
            size=int(members.size),
            provisional_label="",
            n_documents=int(tok["doc_id"].nunique()),
            source_mix=source_mix,
            top_tokens=top,
            contexts=contexts,
            readout=ro,
            threshold=float(threshold),
            subcomponent_of=subcomponent_of,
            token_purity=round(counts[0][1] / members.size, 6) if counts else None,
            n_distinct_tokens=len(counts),
            next_tokens=next_tokens,
            n_next_unknown=n_unknown,
            model_next=model_next,
            model_next_members=n_read,
        )
        card.provisional_label = provisional_label(card)
        cards.append(card)
    return cards


def _members_by_label(labels: np.ndarray, wanted: np.ndarray) -> dict[int, np.ndarray]:
    """``{label: ascending member rows}`` for each label in ``wanted``, from one stable argsort."""
    sel = np.flatnonzero(np.isin(labels, wanted))
    order = sel[np.argsort(labels[sel], kind="stable")]
    lab_sorted = labels[order]
    bounds = np.searchsorted(lab_sorted, wanted, side="left"), np.searchsorted(lab_sorted, wanted, side="right")
    return {int(w): order[a:b] for w, a, b in zip(wanted, *bounds, strict=True)}


def build_cards(
    labels: np.ndarray,
    rows: RowsSource,
    tokens: pd.DataFrame,
    docs: pd.DataFrame,
    *,
    ranks: tuple[int, int] = (2, 20),
    contexts_per_card: int = 6,
    threshold: float,
    readout: Readout | None = None,
    raw_rows: RowsSource | None = None,
    context_chars: int = CONTEXT_CHARS,
) -> CardList:
    """Cards for component ranks ``ranks[0]..ranks[1]`` (inclusive, 1-based; rank r has label r - 1).

    ``labels``: canonical int64 [N]. ``rows``: unit rows (see :func:`row_getter`); ``raw_rows``: the raw
    activations, needed for the logit lens of :class:`Readout` (the members' raw mean minus the corpus
    mean goes through the model's final norm and unembedding); the model's next-token predictions need
    only ``readout.predict``. Ranks beyond the number of components are skipped and named in
    ``result.notes`` (also logged); so is a lens that cannot be computed for want of ``raw_rows``.
    """
    labels = np.asarray(labels)
    if labels.ndim != 1 or not np.issubdtype(labels.dtype, np.integer):
        raise ValueError(f"labels must be a 1-D integer array, got {labels.dtype} {labels.shape}")
    lo, hi = int(ranks[0]), int(ranks[1])
    if not 1 <= lo <= hi:
        raise ValueError(f"ranks must be 1 <= first <= last, got {ranks}")
    n = labels.size
    n_comp = int(labels.max()) + 1 if n else 0
    tokens = prepare_tokens(tokens, n)
    notes: list[str] = []
    if hi > n_comp:
        skipped = f"{max(lo, n_comp + 1)}..{hi}" if max(lo, n_comp + 1) < hi else str(hi)
        notes.append(f"ranks {skipped} requested but there are only {n_comp} components; skipped")
    if readout is not None and readout.final_norm is not None and raw_rows is None:
        notes.append("logit lens skipped: raw (un-normalized) rows were not given")
    if readout is not None and readout.final_norm is not None and readout.center is None:
        notes.append("logit lens skipped: no corpus mean to read the components' directions against")
    wanted = np.arange(lo - 1, min(hi, n_comp), dtype=np.int64)
    members = _members_by_label(labels, wanted)
    groups = [(int(w) + 1, int(w), members[int(w)]) for w in wanted]
    return _build_from_groups(
        groups, rows, tokens, docs, contexts_per_card=contexts_per_card, threshold=threshold, readout=readout,
        raw_rows=raw_rows, subcomponent_of=None, context_chars=context_chars, notes=notes,
    )


def giant_subcards(
    forest_labels_at_higher_t: np.ndarray,
    giant_members: np.ndarray,
    rows: RowsSource,
    tokens: pd.DataFrame,
    docs: pd.DataFrame,
    *,
    higher_threshold: float,
    ranks: tuple[int, int] = (1, 10),
    contexts_per_card: int = 6,
    readout: Readout | None = None,
    raw_rows: RowsSource | None = None,
    parent_rank: int = 1,
    context_chars: int = CONTEXT_CHARS,
) -> CardList:
    """Cards of the giant's sub-components at a higher threshold.

    ``giant_members``: int64 [M] global rows of the giant at the chosen threshold.
    ``forest_labels_at_higher_t``: int [M] labels at ``higher_threshold`` of those rows (e.g.
    ``forest.labels_at(t_hi)[giant_members]``; single linkage nests, so each sub-component lies inside the
    giant). They are relabelled canonically within the giant; card ``rank`` r is the r-th largest
    sub-component, ``label_id`` its canonical sub-label, ``subcomponent_of = parent_rank``.
    """
    giant_members = np.asarray(giant_members, dtype=np.int64)
    sub = np.asarray(forest_labels_at_higher_t)
    if sub.shape != giant_members.shape:
        raise ValueError(f"labels {sub.shape} and giant_members {giant_members.shape} differ in shape")
    order = np.argsort(giant_members, kind="stable")
    giant_members, sub = giant_members[order], sub[order]
    canon = canonical_labels(sub)
    lo, hi = int(ranks[0]), int(ranks[1])
    n_comp = int(canon.max()) + 1 if canon.size else 0
    notes = []
    if hi > n_comp:
        notes.append(f"the giant has only {n_comp} sub-components at t={higher_threshold}; ranks up to {hi} requested")
    wanted = np.arange(lo - 1, min(hi, n_comp), dtype=np.int64)
    local = _members_by_label(canon, wanted)
    groups = [(int(w) + 1, int(w), giant_members[local[int(w)]]) for w in wanted]
    return _build_from_groups(
        groups, rows, prepare_tokens(tokens, len(tokens)), docs, contexts_per_card=contexts_per_card,
        threshold=higher_threshold, readout=readout, raw_rows=raw_rows, subcomponent_of=parent_rank,
        context_chars=context_chars, notes=notes,
    )
