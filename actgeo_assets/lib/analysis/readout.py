"""The model's readouts on a card: its own next-token predictions at a sample of member positions, and
the mid-depth logit lens of the component's direction (see :class:`Readout`)."""

from __future__ import annotations

import re
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from actgeo_assets.lib.graph.labels import members_by_label
from actgeo_assets.lib.store.rows import chunked_mean

#: The model's next-token distribution at global rows: ``rows int64 [m] -> [m]`` lists of ``(token id,
#: probability)``, most probable first, special tokens left out.
Predictor = Callable[[np.ndarray], Sequence[Sequence[tuple[int, float]]]]


#: Members per card whose next-token predictions the model is asked for: a sample evenly spaced over the
#: members in row order when a component is larger (the card says how many were read).
READOUT_MEMBERS = 32
#: Entries of each next-token list on a card (corpus, model, lens).
NEXT_TOKENS = 8


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


def component_lens(readout: Readout, raw_get: Callable[[np.ndarray], np.ndarray],
                   members: np.ndarray) -> tuple[list[tuple[str, float]] | None, dict[str, Any] | None]:
    """The card's mid-depth logit lens: ``(entries, meta)``. ``entries``: ``[(token, logit), ...]`` of the
    members' mean raw activation minus ``readout.center`` (:func:`next_token_readout`); ``meta``: what a card
    needs to say about them (JSON; None when nothing to say). ``raw_get`` maps ascending global rows
    (int64 [m]) to raw rows [m, d]; ``members``: int64 [m] ascending global rows."""
    if readout.final_norm is None or readout.unembed is None or readout.center is None:
        return None, None
    direction = chunked_mean(raw_get, members) - np.asarray(readout.center, dtype=np.float64)
    entries = next_token_readout(direction, readout.final_norm, readout.unembed, readout.tokenizer,
                                 softcap=readout.softcap, hidden=readout.hidden)
    return entries, None


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
    members = members_by_label(labels, wanted) if wanted.size else {}
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


def _decode(tokenizer: Any, i: int) -> str:
    if tokenizer is None:
        return f"#{i}"
    if hasattr(tokenizer, "decode"):
        return str(tokenizer.decode([i]))
    if callable(tokenizer):
        return str(tokenizer(i))
    return str(tokenizer[i])
