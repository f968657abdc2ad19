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
- ``inputs`` (optional): ``np.ndarray[uint64]`` [N], the model-input key of each activation
  (:func:`~.inputs.input_keys` of the raw token tables, kept rows, global row order): cards then count their
  distinct model inputs and never show one input twice; ``early`` (optional): ``np.ndarray[bool]`` [N], the
  activations at the first positions of a window (:func:`~.inputs.early_mask`), counted on each card.

Everything scales to N = 1e6: members of all requested components come from one ``argsort``; means and
cosines are computed in chunks so even a card of the giant never materializes its rows at once.

The parts live beside this module: rows in :mod:`actgeo_assets.lib.store.rows`, token text and contexts in
:mod:`.tokens`, provisional labels in :mod:`.labels`, the model's readouts in :mod:`.readout`, the
run-wide token-identity baseline in :mod:`.baseline`; this module assembles the cards.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from actgeo_assets.lib.analysis.labels import provisional_label
from actgeo_assets.lib.analysis.readout import (
    NEXT_TOKENS,
    Readout,
    component_lens,
    readout_sample,
    summarize_predictions,
)
from actgeo_assets.lib.analysis.tokens import (
    CONTEXT_CHARS,
    Context,
    plain_python,
    prepare_tokens,
    select_contexts,
    token_context,
)
from actgeo_assets.lib.graph import canonical_labels
from actgeo_assets.lib.graph.labels import members_by_label
from actgeo_assets.lib.store.rows import RowsSource, chunked_mean, cosines_to_direction, row_getter

log = logging.getLogger(__name__)


#: Tokens kept in ``Card.top_tokens``.
TOP_TOKENS = 10



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
    documents); ``recall``: ``{"token", "held", "total"}``, the top token string, the members that carry it and
    its occurrences among all activations of the run (how much of that token the component captures).

    Artefact controls (None when not computed): ``n_inputs``, the distinct model inputs among the members
    (identical token ids from the window's start through the member's position: one activation computed
    several times); ``n_early``, the members at the first positions of a window (``position <`` the run's
    ``early_position_limit``)."""

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
    n_inputs: int | None = None
    n_input_documents: int | None = None  # documents, each distinct input counted once (in its first member's)
    n_early: int | None = None
    recall: dict[str, Any] | None = None

    @property
    def one_input(self) -> bool:
        """Whether the card is ONE model input repeated (``size`` copies of one activation): an artefact."""
        return self.n_inputs == 1 and self.size >= 2

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
        rc = d.get("recall")
        d["recall"] = None if rc is None else {"token": str(rc["token"]), "held": int(rc["held"]),
                                                "total": int(rc["total"])}
        return cls(**d)


class CardList(list[Card]):
    """A list of cards plus ``notes``: human-readable remarks (e.g. requested ranks that do not exist)."""

    def __init__(self, cards: list[Card] | None = None, notes: list[str] | None = None) -> None:
        super().__init__(cards or [])
        self.notes: list[str] = list(notes or [])


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


def _artefact_arrays(n: int, inputs: np.ndarray | None, early: np.ndarray | None
                     ) -> tuple[np.ndarray | None, np.ndarray | None]:
    """``inputs`` (uint64 [n]) and ``early`` (bool [n]) checked; ValueError naming the one that does not fit."""
    if inputs is not None:
        inputs = np.asarray(inputs)
        if inputs.shape != (n,) or inputs.dtype != np.uint64:
            raise ValueError(f"inputs must be uint64 [{n}] (input_keys, global row order), got {inputs.dtype} "
                             f"{inputs.shape}")
    if early is not None:
        early = np.asarray(early)
        if early.shape != (n,) or early.dtype != bool:
            raise ValueError(f"early must be bool [{n}] (early_mask, global row order), got {early.dtype} {early.shape}")
    return inputs, early


def tie_note(sizes: np.ndarray, last: int, what: str = "ranks") -> str | None:
    """The note when the components just past the last carded rank tie with it: ``sizes`` int [C] non-increasing
    (rank r has ``sizes[r - 1]``), ``last`` the last carded rank (1-based). None when there is no such tie."""
    if last < 1 or last >= len(sizes) or sizes[last] != sizes[last - 1]:
        return None
    size = int(sizes[last - 1])
    tied = np.flatnonzero(np.asarray(sizes) == size) + 1
    a, b = int(tied[0]), int(tied[-1])
    left = f"rank {b} gets" if b == last + 1 else f"ranks {last + 1}-{b} get"
    return (f"{what} {a}-{b} all have {size:,} activation{'s' if size != 1 else ''}; cards stop at rank {last}, "
            f"so {left} none")


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
    inputs: np.ndarray | None = None,
    early: np.ndarray | None = None,
) -> CardList:
    """Cards for ``groups = [(rank, label_id, members int64 [m] ascending global rows), ...]``, with
    ``notes`` (each also logged). ``tokens``: the whole run's table (the recall counts every activation)."""
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
    totals = tokens["token"].astype(str).value_counts(sort=False) if groups else None  # the recall's denominators
    for g, (rank, label_id, members) in enumerate(groups):
        tok = tokens.iloc[members]
        mean = chunked_mean(get, members)
        cos = cosines_to_direction(get, members, mean)
        member_inputs = None if inputs is None else inputs[members]
        pick = select_contexts(cos, tok["doc_id"].to_numpy(), contexts_per_card, member_inputs)
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
        ro, lens_meta = None, None
        if lens:
            assert readout is not None and raw_get is not None
            ro, lens_meta = component_lens(readout, raw_get, members)
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
            n_inputs=None if member_inputs is None else int(np.unique(member_inputs).size),
            n_input_documents=None if member_inputs is None else int(pd.Series(
                tok["doc_id"].to_numpy()[~pd.Series(member_inputs).duplicated().to_numpy()]).nunique()),
            n_early=None if early is None else int(np.count_nonzero(early[members])),
            recall=({"token": counts[0][0], "held": counts[0][1], "total": int(totals[counts[0][0]])}
                    if counts and totals is not None else None),
        )
        if lens_meta is not None:
            card.extra["lens"] = lens_meta
        card.provisional_label = provisional_label(card)
        cards.append(card)
    return cards


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
    inputs: np.ndarray | None = None,
    early: np.ndarray | None = None,
) -> CardList:
    """Cards for component ranks ``ranks[0]..ranks[1]`` (inclusive, 1-based; rank r has label r - 1).

    ``labels``: canonical int64 [N]. ``rows``: unit rows (see :func:`row_getter`); ``raw_rows``: the raw
    activations, needed for the logit lens of :class:`Readout` (the members' raw mean minus the corpus
    mean goes through the model's final norm and unembedding); the model's next-token predictions need
    only ``readout.predict``. Ranks beyond the number of components are skipped and named in
    ``result.notes`` (also logged); so is a lens that cannot be computed for want of ``raw_rows``, and a tie
    at the last rank (components past it as large as the last carded one). ``inputs`` (uint64 [N]) and
    ``early`` (bool [N]), global row order: see the module docstring (None: not computed).
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
    inputs, early = _artefact_arrays(n, inputs, early)
    notes: list[str] = []
    if hi > n_comp:
        skipped = f"{max(lo, n_comp + 1)}..{hi}" if max(lo, n_comp + 1) < hi else str(hi)
        notes.append(f"ranks {skipped} requested but there are only {n_comp} components; skipped")
    if readout is not None and readout.final_norm is not None and raw_rows is None:
        notes.append("logit lens skipped: raw (un-normalized) rows were not given")
    if readout is not None and readout.final_norm is not None and readout.center is None:
        notes.append("logit lens skipped: no corpus mean to read the components' directions against")
    tie = tie_note(np.bincount(labels, minlength=n_comp), min(hi, n_comp)) if lo <= n_comp else None
    if tie:
        notes.append(tie)
    wanted = np.arange(lo - 1, min(hi, n_comp), dtype=np.int64)
    members = members_by_label(labels, wanted)
    groups = [(int(w) + 1, int(w), members[int(w)]) for w in wanted]
    return _build_from_groups(
        groups, rows, tokens, docs, contexts_per_card=contexts_per_card, threshold=threshold, readout=readout,
        raw_rows=raw_rows, subcomponent_of=None, context_chars=context_chars, notes=notes, inputs=inputs,
        early=early,
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
    inputs: np.ndarray | None = None,
    early: np.ndarray | None = None,
) -> CardList:
    """Cards of the giant's sub-components at a higher threshold.

    ``giant_members``: int64 [M] global rows of the giant at the chosen threshold.
    ``forest_labels_at_higher_t``: int [M] labels at ``higher_threshold`` of those rows (e.g.
    ``forest.labels_at(t_hi)[giant_members]``; single linkage nests, so each sub-component lies inside the
    giant). They are relabelled canonically within the giant; card ``rank`` r is the r-th largest
    sub-component, ``label_id`` its canonical sub-label, ``subcomponent_of = parent_rank``. ``tokens``,
    ``inputs`` and ``early`` cover the whole run (global row order), as for :func:`build_cards`.
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
    tie = (tie_note(np.bincount(canon, minlength=n_comp), min(hi, n_comp), what="the giant's sub-component ranks")
           if lo <= n_comp else None)
    if tie:
        notes.append(tie)
    inputs, early = _artefact_arrays(len(tokens), inputs, early)
    wanted = np.arange(lo - 1, min(hi, n_comp), dtype=np.int64)
    local = members_by_label(canon, wanted)
    groups = [(int(w) + 1, int(w), giant_members[local[int(w)]]) for w in wanted]
    return _build_from_groups(
        groups, rows, prepare_tokens(tokens, len(tokens)), docs, contexts_per_card=contexts_per_card,
        threshold=higher_threshold, readout=readout, raw_rows=raw_rows, subcomponent_of=parent_rank,
        context_chars=context_chars, notes=notes, inputs=inputs, early=early,
    )
