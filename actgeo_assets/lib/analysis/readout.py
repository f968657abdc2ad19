"""The model's readouts on a card: its own next-token predictions at a sample of member positions, and
the mid-depth logit lens of the component's direction (see :class:`Readout`), shown only where it beats a
control of random groups of activations (:func:`component_lens`) and only with readable tokens
(:func:`readable_token_ids`)."""

from __future__ import annotations

import math
import re
import unicodedata
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
#: Random groups of activations each card's lens is compared with (:func:`component_lens`).
LENS_CONTROLS = 128
#: The largest control group: a group has as many activations as the component, up to this many.
LENS_CONTROL_ROWS = 1024
#: A lens token is shown when its p-value against the controls (family-wise over the tokens) is at most this.
LENS_ALPHA = 0.05
#: Seed of the control groups (with the run's size and the component's: the same card, the same groups).
LENS_SEED = 23


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
    - ``vocabulary``: the token ids that occur in the run's own sample (its activations' tokens and the
      tokens after them); the lens shows no other token, so fragments of scripts the corpus does not hold
      drop out. None: every readable token of the model.
    - ``n_rows``: the number of activations the lens's ``raw_get`` covers (global rows ``0..n_rows-1``):
      the control groups are drawn from them. None: no control can be drawn and no lens is shown.
    - ``lens_controls``: control groups per card (:data:`LENS_CONTROLS`); 0 shows the plain lens, readable
      tokens only, without a control (for tests of the lens itself).
    """

    predict: Predictor | None = None
    final_norm: Callable[[Any], Any] | None = None
    unembed: Any = None
    center: np.ndarray | None = None
    tokenizer: Any = None
    hidden: frozenset[int] = frozenset()
    members: int = READOUT_MEMBERS
    softcap: float | None = None
    vocabulary: frozenset[int] | None = None
    n_rows: int | None = None
    lens_controls: int = LENS_CONTROLS


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
    x = torch.as_tensor(np.asarray(direction), dtype=w.dtype, device=w.device).reshape(1, -1)
    if x.shape[1] != w.shape[1]:
        raise ValueError(f"direction has {x.shape[1]} dims but unembed is {tuple(w.shape)} ([V, d])")
    with torch.no_grad():
        h = final_norm(x)
        logits = (h.to(w.dtype) @ w.T).reshape(-1).double()
        if softcap:
            logits = softcap * torch.tanh(logits / softcap)
        if hidden:
            logits[torch.as_tensor(sorted(hidden), dtype=torch.long, device=logits.device)] = -torch.inf
        vals, ids = torch.topk(logits, min(k, logits.numel() - len(hidden)))
    return [(_decode(tokenizer, int(i)), float(v)) for v, i in zip(vals, ids, strict=True)]


def component_lens(readout: Readout, raw_get: Callable[[np.ndarray], np.ndarray],
                   members: np.ndarray) -> tuple[list[tuple[str, float]] | None, dict[str, Any] | None]:
    """The card's mid-depth logit lens against a control: ``(entries, meta)``.

    The lens of the component is that of its members' mean raw activation minus ``readout.center``
    (:func:`next_token_readout`). Read alone its top logits are mostly tokens that top the lens of almost
    any direction (on the demo: byte pieces, emoji, fragments of scripts the corpus never holds), so:

    - only readable tokens are candidates (:func:`readable_token_ids`: no byte piece, replacement
      character, control or special token; with ``readout.vocabulary`` only tokens of the run's sample);
    - the control: ``K = readout.lens_controls`` random groups of activations outside the component, each
      of the component's size (at most :data:`LENS_CONTROL_ROWS`: the final norm makes the lens depend on
      a direction only, and a random group's mean minus the corpus mean points the same way in
      distribution whatever its size once it holds hundreds; a capped group is, if anything, noisier, so
      the cap errs towards showing less), read exactly like the component. Seeded by :data:`LENS_SEED`,
      the run's size and the component's: deterministic. A group's *margin* on a token is its logit minus
      the largest logit of the other ``K`` groups (the component included);
    - a token is shown when the component's margin on it is positive and larger than the best margin
      (over all candidate tokens) of all but ``floor(LENS_ALPHA (K + 1)) - 1`` control groups: a
      permutation test of the maximum over tokens (were the component a random group of its size, some
      token would pass with probability at most :data:`LENS_ALPHA`). Shown tokens are ranked by margin, at
      most :data:`NEXT_TOKENS`; none pass: ``entries == []`` ("nothing beyond the control").

    Why not a per-token test alone (a logit above every control's, or a z-score): with thousands of
    candidate tokens a random group itself beats every other group on some (on the demo, 64 groups of the
    cards' sizes: a median of 3-24 tokens, a tenth of the groups 140 or more; groups of a few activations
    read their members' own tokens), and the control logits are heavy-tailed (a z-score from 32-128 of
    them is unstable), so such lists would look like findings for random groups too. The lens of the corpus mean is no control here: the component's direction has the corpus
    mean subtracted. Cost per card: ``K`` chunked means over at most :data:`LENS_CONTROL_ROWS` rows, one
    ``[K + 1, d] x [d, candidates]`` product and one plain ``[1, d] x [d, V]`` (what was dropped); on the
    demo (``V`` = 262,144, 6,797 tokens in the sample, K = 128) 0.1-0.4 s on two CPU cores.

    ``raw_get`` maps ascending global rows (int64 [m]) to raw rows [m, d] and covers
    ``0..readout.n_rows-1``; ``members``: int64 [m] ascending global rows. ``meta`` (JSON; None without a
    lens): ``"control"`` (the groups, in words; None for the plain lens of ``lens_controls=0``), ``"k"``,
    ``"group_size"``, ``"seed"``, ``"alpha"``, ``"threshold"`` (the margin a token must exceed),
    ``"controls_above_threshold"`` (groups whose best margin exceeds it), ``"candidates"`` (readable
    tokens), ``"passed"``, ``"shown"``, ``"margins"`` and ``"p"`` (per shown entry), ``"best_margin"`` (the
    component's largest), ``"beat_every_control"`` (its tokens with a positive margin) and
    ``"controls_beat_every_other_median"`` (the same count for a control group, median), ``"plain_top"``
    (the plain lens's top :data:`NEXT_TOKENS`, what the card showed before), ``"dropped_unreadable"`` (of
    those, not candidates), ``"dropped_not_in_corpus"`` (of those, readable but not in the vocabulary),
    ``"dropped_below_control"`` (candidates that did not pass), ``"vocabulary"`` (its size); with
    ``"skipped"`` (a reason) and entries None when no control can be drawn.
    """
    if readout.final_norm is None or readout.unembed is None or readout.center is None:
        return None, None
    members = np.asarray(members, dtype=np.int64)
    direction = chunked_mean(raw_get, members) - np.asarray(readout.center, dtype=np.float64)
    n_vocab = int(np.shape(readout.unembed)[0])
    cand = readable_token_ids(readout.tokenizer, readout.vocabulary, readout.hidden, n_vocab)
    k = int(readout.lens_controls)
    plain, top_ids, unreadable, not_in_corpus = _plain_top(readout, direction, cand)
    plain_top = [(token_text(readout.tokenizer, i), float(plain[i])) for i in top_ids]
    meta: dict[str, Any] = {"candidates": int(cand.size), "plain_top": [[t, v] for t, v in plain_top],
                            "dropped_unreadable": unreadable, "dropped_not_in_corpus": not_in_corpus,
                            "vocabulary": None if readout.vocabulary is None else len(readout.vocabulary)}
    if k == 0:  # the plain lens, readable tokens only (no control: tests of the lens itself)
        order = cand[np.argsort(-plain[cand], kind="stable")][:NEXT_TOKENS]
        entries = [(_decode(readout.tokenizer, int(i)), float(plain[i])) for i in order]
        return entries, {**meta, "control": None, "shown": len(entries), "dropped_below_control": 0}
    if readout.n_rows is None:
        return None, {**meta, "skipped": "no control: the number of activations (Readout.n_rows) was not given"}
    if cand.size == 0:
        return None, {**meta, "skipped": "no readable token of the run's sample to read"}
    groups = control_groups(int(readout.n_rows), members, k, LENS_CONTROL_ROWS, LENS_SEED)
    if groups is None:
        return None, {**meta, "skipped": f"no control: the component holds {members.size:,} of the run's "
                                         f"{int(readout.n_rows):,} activations, too few are left to draw from"}
    size = int(groups[0].size)
    allowed = math.floor(LENS_ALPHA * (k + 1)) - 1
    if allowed < 0:
        raise ValueError(f"lens_controls={k} is too few for LENS_ALPHA={LENS_ALPHA}: need at least "
                         f"{math.ceil(1 / LENS_ALPHA) - 1} control groups")
    directions = np.vstack([direction] + [chunked_mean(raw_get, g) - np.asarray(readout.center, np.float64)
                                          for g in groups])
    logits = lens_logits(directions, readout.final_norm, readout.unembed, cand, readout.softcap)
    margin = lens_margins(logits)
    best = np.sort(margin[1:].max(axis=1))[::-1]  # each control group's best margin, descending
    threshold = float(max(best[allowed], 0.0))
    comp = margin[0]
    passed = np.flatnonzero(comp > threshold)
    order = passed[np.argsort(-comp[passed], kind="stable")][:NEXT_TOKENS]
    p_val = [(1 + int(np.sum(best >= comp[i]))) / (k + 1) for i in order]
    entries = [(_decode(readout.tokenizer, int(cand[i])), float(logits[0, i])) for i in order]
    ok = set(cand.tolist())
    readable_top = [i for i in top_ids if i in ok]
    shown_ids = {int(cand[i]) for i in passed}
    meta.update({
        "control": (f"{k} random groups of {size:,} activations outside the component, each read like it "
                    "(mean minus the corpus mean)"),
        "k": k, "group_size": size, "seed": LENS_SEED, "alpha": LENS_ALPHA, "threshold": round(threshold, 6),
        "controls_above_threshold": int(np.sum(best > threshold)),
        "passed": int(passed.size), "shown": len(entries), "best_margin": round(float(comp.max()), 6),
        # the per-token test alone (logit above every control group's), for the component and the controls
        "beat_every_control": int(np.sum(comp > 0)),
        "controls_beat_every_other_median": float(np.median(np.sum(margin[1:] > 0, axis=1))),
        "margins": [round(float(comp[i]), 6) for i in order], "p": [round(v, 6) for v in p_val],
        "dropped_below_control": sum(1 for i in readable_top if i not in shown_ids),
    })
    return entries, meta


def control_groups(n_rows: int, members: np.ndarray, k: int, cap: int = LENS_CONTROL_ROWS,
                   seed: int = LENS_SEED) -> list[np.ndarray] | None:
    """``k`` random groups (each int64 ascending global rows, no repeats within a group) of
    ``min(members.size, cap, n_rows - members.size)`` activations among ``0..n_rows-1`` outside ``members``;
    None when fewer than 2 are left. Deterministic: seeded by ``(seed, n_rows, members.size)``."""
    members = np.unique(np.asarray(members, dtype=np.int64))
    if members.size and (members[0] < 0 or members[-1] >= n_rows):
        raise ValueError(f"members outside 0..{n_rows - 1} (the run's activations)")
    others = n_rows - members.size
    size = min(members.size, cap, others)
    if size < 2 or others < 2:
        return None
    rng = np.random.default_rng([seed, n_rows, members.size])
    out = []
    for _ in range(k):
        j = np.sort(rng.choice(others, size=size, replace=False))
        out.append(_nth_outside(j, members))
    return out


def _nth_outside(j: np.ndarray, members: np.ndarray) -> np.ndarray:
    """Global rows of the ``j``-th (0-based, ascending) activations not in ``members`` (sorted, unique)."""
    # shift[i] = members[i] - i: how many non-members lie below members[i]; j's row is j + #{i: shift[i] <= j}
    shift = members - np.arange(members.size, dtype=np.int64)
    return j + np.searchsorted(shift, j, side="right")


def lens_logits(directions: np.ndarray, final_norm: Callable[[Any], Any], unembed: Any,
                ids: np.ndarray | None = None, softcap: float | None = None) -> np.ndarray:
    """float64 ``[g, len(ids)]`` (all ``V`` tokens when ``ids`` is None): each of ``directions`` ([g, d])
    through ``final_norm`` (called on one ``[1, d]`` row at a time) and the rows ``ids`` of ``unembed``
    ([V, d]); with ``softcap``, ``softcap * tanh(logits / softcap)``."""
    import torch

    w = torch.as_tensor(unembed)
    # on the unembedding's device (the model's: a GPU where the cards stage loaded it there)
    x = torch.as_tensor(np.atleast_2d(np.asarray(directions)), dtype=w.dtype, device=w.device)
    if x.shape[1] != w.shape[1]:
        raise ValueError(f"directions have {x.shape[1]} dims but unembed is {tuple(w.shape)} ([V, d])")
    with torch.no_grad():
        h = torch.cat([final_norm(x[i:i + 1]).reshape(1, -1) for i in range(x.shape[0])]).to(w.dtype)
        if ids is not None:
            w = w[torch.as_tensor(np.asarray(ids, dtype=np.int64), device=w.device)]
        logits = (h @ w.T).double()
        if softcap:
            logits = softcap * torch.tanh(logits / softcap)
    return logits.cpu().numpy()


def lens_margins(logits: np.ndarray) -> np.ndarray:
    """``[g, C]``: each group's logit on each token minus the largest logit of the other groups there
    (``logits``: ``[g, C]``, ``g >= 2``); positive where that group beats every other one."""
    logits = np.asarray(logits, dtype=np.float64)
    if logits.ndim != 2 or logits.shape[0] < 2:
        raise ValueError(f"logits must be [groups >= 2, tokens], got {logits.shape}")
    top = np.sort(logits, axis=0)
    first, second = top[-1], top[-2]
    return logits - np.where(logits >= first, second, first)


def plain_top_ids(logits: np.ndarray, hidden: Collection[int] = (), k: int = NEXT_TOKENS) -> list[int]:
    """The ``k`` token ids of the largest ``logits`` ([V]) that are not ``hidden``: what the plain lens shows."""
    logits = np.array(logits, dtype=np.float64)
    if hidden:
        logits[np.fromiter(hidden, dtype=np.int64)] = -np.inf
    k = min(k, logits.size)
    part = np.argpartition(-logits, k - 1)[:k] if 0 < k < logits.size else np.arange(logits.size)
    order = part[np.argsort(-logits[part], kind="stable")][:k]
    return [int(i) for i in order if np.isfinite(logits[i])]


def _plain_top(readout: Readout, direction: np.ndarray,
               cand: np.ndarray) -> tuple[np.ndarray, list[int], int, int]:
    """The plain lens over all tokens (float64 [V]), the ids it shows (:func:`plain_top_ids`), and how many
    of them are unreadable (and of those, readable text absent from the vocabulary)."""
    plain = lens_logits(direction, readout.final_norm, readout.unembed, None, readout.softcap)[0]
    top = plain_top_ids(plain, readout.hidden)
    ok = set(cand.tolist())
    bad = [i for i in top if i not in ok]
    not_in_corpus = 0
    if readout.vocabulary is not None:
        readable_anywhere = set(_readable(readout.tokenizer, np.asarray(bad, np.int64), readout.hidden).tolist())
        not_in_corpus = sum(1 for i in bad if i in readable_anywhere)
    return plain, top, len(bad), not_in_corpus


_BYTE_PIECE = re.compile(r"<0x[0-9A-Fa-f]{2}>")
_READABLE_CACHE: dict[tuple[int, int, int, int], tuple[Any, Any, Any, np.ndarray]] = {}


def readable_text(text: str, piece: str | None = None) -> bool:
    """Whether a token's decoded ``text`` reads as text: not empty, no replacement character (U+FFFD: a
    byte of a multi-byte character), no byte-fallback piece (``<0x..>``, in ``text`` or the tokenizer's
    ``piece``), no control character but tab and newlines, no private-use, unassigned or surrogate code
    point, and not made only of format characters or combining marks (a stray fragment)."""
    if not text or "\ufffd" in text or _BYTE_PIECE.search(text) or (piece and _BYTE_PIECE.fullmatch(piece)):
        return False
    cats = [unicodedata.category(ch) for ch in text]
    if any(c in ("Co", "Cn", "Cs") or (c == "Cc" and ch not in "\t\n\r") for c, ch in zip(cats, text, strict=True)):
        return False
    return not all(c in ("Cf", "Mn", "Me") for c in cats)


def readable_token_ids(tokenizer: Any, ids: Collection[int] | None, hidden: Collection[int] = (),
                       n_vocab: int | None = None) -> np.ndarray:
    """int64 ascending: the ids among ``ids`` (None: ``0..n_vocab-1``; ids at or above ``n_vocab`` are
    left out) that are not ``hidden`` and whose text is readable (:func:`readable_text`; with a Hugging
    Face tokenizer its piece too). Cached per (tokenizer, ids, hidden) object: one pass for a run's cards."""
    if ids is None and n_vocab is None:
        raise ValueError("readable_token_ids: give the ids or the vocabulary size n_vocab")
    key = (id(tokenizer), 0 if ids is None else id(ids), id(hidden), -1 if n_vocab is None else int(n_vocab))
    hit = _READABLE_CACHE.get(key)
    if hit is not None and hit[0] is tokenizer and hit[1] is ids and hit[2] is hidden:
        return hit[3]
    wanted = (np.arange(int(n_vocab or 0), dtype=np.int64) if ids is None
              else np.unique(np.fromiter((int(i) for i in ids), dtype=np.int64)))
    if n_vocab is not None:
        wanted = wanted[(wanted >= 0) & (wanted < n_vocab)]
    out = _readable(tokenizer, wanted, hidden)
    if len(_READABLE_CACHE) >= 8:
        _READABLE_CACHE.clear()
    _READABLE_CACHE[key] = (tokenizer, ids, hidden, out)
    return out


def _readable(tokenizer: Any, ids: np.ndarray, hidden: Collection[int]) -> np.ndarray:
    """The readable, not hidden ids among ``ids`` (int64, order kept)."""
    ids = np.asarray(ids, dtype=np.int64)
    if hidden and ids.size:
        ids = ids[~np.isin(ids, np.fromiter(hidden, dtype=np.int64))]
    texts, pieces = _texts(tokenizer, ids.tolist())
    return ids[np.array([readable_text(t, p) for t, p in zip(texts, pieces, strict=True)], dtype=bool)]


def _texts(tokenizer: Any, ids: list[int]) -> tuple[list[str], list[str | None]]:
    """Decoded text and (Hugging Face tokenizers) piece of each id; one batched call where possible."""
    if not ids:
        return [], []
    if hasattr(tokenizer, "batch_decode") and hasattr(tokenizer, "convert_ids_to_tokens"):
        texts = [str(t) for t in tokenizer.batch_decode([[i] for i in ids])]
        pieces = [None if p is None else str(p) for p in tokenizer.convert_ids_to_tokens(ids)]
        return texts, pieces
    return [_decode(tokenizer, i) for i in ids], [None] * len(ids)


def token_text(tokenizer: Any, i: int) -> str:
    """The text of token ``i`` for display: its decode, or for a byte-fallback token (a ``<0x..>`` piece)
    the piece itself (``'<0xE7>'``), so a byte is never shown as a character (U+FFFD)."""
    if hasattr(tokenizer, "convert_ids_to_tokens"):
        piece = tokenizer.convert_ids_to_tokens(int(i))
        if piece is not None and _BYTE_PIECE.fullmatch(str(piece)):
            return str(piece)
    return _decode(tokenizer, i)


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
    prediction are left out (the most probable always stays).

    Unlike the lens these are the model's own output, so nothing readable or not is hidden (leaving a
    token out would misstate the distribution; the model may well predict tokens the sample lacks): a
    byte-fallback token is shown as its piece (``'<0xE7>'``, :func:`token_text`), marked as a byte."""
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
    return [(token_text(tokenizer, t), total[t] / m, top1.get(t, 0)) for t in best]


def _decode(tokenizer: Any, i: int) -> str:
    if tokenizer is None:
        return f"#{i}"
    if hasattr(tokenizer, "decode"):
        return str(tokenizer.decode([i]))
    if callable(tokenizer):
        return str(tokenizer(i))
    return str(tokenizer[i])
