"""Capture residual-stream activations at one layer, stopping the forward right after that block.

"Layer L" is the residual stream after decoder block ``L`` (0-based), i.e. ``hidden_states[L + 1]`` of
transformers' ``output_hidden_states`` for every layer but the last (transformers applies the final norm
to its last entry; here the last layer is the residual stream *before* the final norm).

The forward runs on the base model (no LM head); a forward hook on block ``L`` copies its output and
raises a private exception, so blocks ``L+1..`` and the head are never computed. :func:`capture_layers` does
the same for several layers in one forward pass: a hook on each requested block copies its output, and the
hook on the deepest one stops the forward (its rows of layer ``L`` are bit-identical to
:func:`capture_activations` at ``L``: the same batches run through the same blocks).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
import torch
from tqdm.auto import tqdm

from actgeo_assets.lib.capture.documents import Document
from actgeo_assets.lib.capture.model import LoadedModel, base_model, decoder_layers
from actgeo_assets.lib.config.constants import RAW_DTYPE, TOKEN_COLUMNS

log = logging.getLogger(__name__)

# Tokenize prefixes of this many characters per token of context first (long documents would otherwise be
# tokenized in full only to be truncated); fall back to the next step, then the full text, when a prefix is
# too short. Natural text runs at about 3-6 characters per token.
_CHARS_PER_TOKEN_STEPS = (8, 64)
_TOKENIZE_BATCH = 256
_PREFIX_MARGIN = 16


@dataclass
class CaptureResult:
    """Activations of one capture.

    ``acts``: ``[n, d]`` in capture's ``out_dtype`` (float32 by default: exactly what a float32, bfloat16
    or float16 model computed), row ``i`` is the residual stream at ``tokens.row == i``.
    ``tokens``: one row per activation, columns :data:`TOKEN_COLUMNS` (``position`` counts from 0 at
    ``<bos>``; ``char_start:char_end`` is the token's span in its document's text, empty for specials,
    ``-1`` when the tokenizer is a slow one without offsets).
    ``stats``: counts and timings (see :func:`capture_activations`).
    """

    acts: np.ndarray
    tokens: pd.DataFrame
    stats: dict[str, Any] = field(default_factory=dict)


@dataclass
class LayersCaptureResult:
    """Activations of several layers from one forward pass (:func:`capture_layers`).

    ``acts``: layer -> ``[n, d]`` rows in ``out_dtype``; row ``i`` of every layer is the same token
    (``tokens.row == i``). ``tokens`` and ``stats`` as in :class:`CaptureResult` (``stats["layers"]`` lists
    the layers; ``n_overflow_rows`` and ``max_abs`` are per layer).
    """

    acts: dict[int, np.ndarray]
    tokens: pd.DataFrame
    stats: dict[str, Any] = field(default_factory=dict)


class _StopForward(Exception):
    """Raised by the capture hook to end the forward after the captured block."""


@dataclass
class _Item:
    doc: Document
    ids: list[int]
    offsets: list[tuple[int, int]]
    keep_from: int  # first position kept (1 when <bos> is excluded)
    keep_to: int  # one past the last position kept (< len(ids) when the budget ends inside this doc)


def capture_activations(
    loaded: LoadedModel,
    docs: Sequence[Document],
    *,
    layer: int,
    context_len: int,
    budget: int,
    batch_size: int,
    exclude_bos: bool = True,
    progress: bool = True,
    out_dtype: Any = RAW_DTYPE,
) -> CaptureResult:
    """Residual stream after block ``layer`` for the first ``budget`` tokens of ``docs``.

    Documents are taken in order, each tokenized (with ``<bos>``) and truncated to ``context_len``
    tokens; their tokens are kept in order (``<bos>`` dropped when ``exclude_bos``) until exactly
    ``budget`` activations are kept. The document where the budget ends is only run up to its last kept
    token (causal attention: earlier activations are unchanged). Batches are right-padded; padding is
    computed but dropped. ``out_dtype`` (float32 by default) is what the rows are returned in: float32 keeps
    what a float32, bfloat16 or float16 model computed exactly and has the range of bfloat16; float16
    (65,504 at most) may overflow and round.

    ``stats``: ``n_kept`` (== ``budget`` unless the documents ran out: then ``budget_met`` is False and
    ``short_by`` says by how much, with a logged warning), ``n_available`` (keepable tokens in the
    documents used, before the budget cut), ``n_cut_by_budget``, ``n_docs`` (documents used),
    ``n_docs_given``, ``n_docs_unused``, ``n_docs_empty``, ``n_docs_truncated`` (longer than
    ``context_len``), ``n_bos_excluded``, ``n_pad``, ``n_forward_tokens``, ``n_overflow_rows`` (rows with
    a value beyond ``out_dtype``'s range, or not finite in the model: stored as inf or nan, excluded
    downstream), ``max_abs`` (the largest finite absolute value captured), ``out_dtype``, ``seconds``,
    ``tokens_per_s``, and the model/layer/dtype/device.

    Raises ``ValueError`` naming the layer and ``n_layers`` when ``layer`` is out of range, and when
    ``budget``, ``context_len`` or ``batch_size`` is not positive.
    """
    acts, tokens, stats = _capture(
        loaded, docs, (layer,), single=True, context_len=context_len, budget=budget, batch_size=batch_size,
        exclude_bos=exclude_bos, progress=progress, out_dtype=out_dtype,
    )  # fmt: skip
    return CaptureResult(acts=acts[layer], tokens=tokens, stats=stats)


def capture_layers(
    loaded: LoadedModel,
    docs: Sequence[Document],
    *,
    layers: Sequence[int],
    context_len: int,
    budget: int,
    batch_size: int,
    exclude_bos: bool = True,
    progress: bool = True,
    out_dtype: Any = RAW_DTYPE,
) -> LayersCaptureResult:
    """The residual stream after each block of ``layers`` (any order, no repeats) from one forward pass.

    Same documents, budget, batching and ``out_dtype`` as :func:`capture_activations`; hooks on every
    requested block copy its output and the hook on the deepest one stops the forward, so blocks after
    ``max(layers)`` and the head never run. ``acts[L]`` equals ``capture_activations(..., layer=L).acts``
    exactly (same batches, same blocks). ``stats`` as there, with ``layers`` (sorted) instead of ``layer``
    and ``n_overflow_rows``/``max_abs`` as ``{layer: value}``.

    Raises ``ValueError`` for no layers, a repeated layer, a layer out of range (naming it and
    ``n_layers``) and a non-positive ``budget``, ``context_len`` or ``batch_size``.
    """
    wanted = [int(x) for x in layers]
    if not wanted:
        raise ValueError("layers is empty: give at least one layer to capture")
    if len(set(wanted)) != len(wanted):
        raise ValueError(f"layers {wanted} repeat a layer: give each layer once")
    acts, tokens, stats = _capture(
        loaded, docs, tuple(sorted(wanted)), single=False, context_len=context_len, budget=budget,
        batch_size=batch_size, exclude_bos=exclude_bos, progress=progress, out_dtype=out_dtype,
    )  # fmt: skip
    return LayersCaptureResult(acts=acts, tokens=tokens, stats=stats)


def _capture(
    loaded: LoadedModel,
    docs: Sequence[Document],
    layers: tuple[int, ...],
    *,
    single: bool,
    context_len: int,
    budget: int,
    batch_size: int,
    exclude_bos: bool,
    progress: bool,
    out_dtype: Any,
) -> tuple[dict[int, np.ndarray], pd.DataFrame, dict[str, Any]]:
    """The capture of ``layers`` (sorted, distinct): ``({layer: [n, d] rows}, token table, stats)``.

    ``single``: the stats and messages of :func:`capture_activations` (``layer``, scalar overflow counts);
    otherwise those of :func:`capture_layers`."""
    for layer in layers:
        if not 0 <= layer < loaded.n_layers:
            raise ValueError(
                f"layer {layer} is out of range for {loaded.name}: it has n_layers={loaded.n_layers} "
                f"decoder blocks (valid layers 0..{loaded.n_layers - 1})"
            )
    if budget < 1 or context_len < 1 or batch_size < 1:
        raise ValueError(
            f"budget ({budget}), context_len ({context_len}) and batch_size ({batch_size}) must be >= 1"
        )
    tokenizer = loaded.tokenizer
    bos_id = tokenizer.bos_token_id
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    t0 = time.perf_counter()

    # 1. plan: tokenize documents in order (in batches, which the fast tokenizers run in parallel) until
    # the budget is covered
    items: list[_Item] = []
    n_kept = n_available = n_bos = n_empty = n_truncated = 0
    n_docs_seen = 0
    for chunk in _doc_chunks(docs, _TOKENIZE_BATCH):
        if n_kept >= budget:
            break
        for doc, (ids, offsets, truncated) in zip(chunk, _tokenize_many(tokenizer, chunk, context_len), strict=True):
            if n_kept >= budget:
                break
            n_docs_seen += 1
            n_truncated += truncated
            start = 1 if (exclude_bos and ids and bos_id is not None and ids[0] == bos_id) else 0
            keepable = len(ids) - start
            if keepable <= 0:
                n_empty += 1
                continue
            n_bos += start
            n_available += keepable
            take = min(keepable, budget - n_kept)
            n_kept += take
            items.append(_Item(doc, ids[: start + take], offsets[: start + take], start, start + take))
    n_cut = n_available - n_kept
    plan_seconds = time.perf_counter() - t0

    # 2. forward up to the deepest block of `layers` only
    blocks = decoder_layers(loaded.model)
    base = base_model(loaded.model)
    d = loaded.hidden_size
    deepest = layers[-1]
    acts = {layer: np.empty((n_kept, d), dtype=out_dtype) for layer in layers}
    captured: dict[int, list[torch.Tensor]] = {layer: [] for layer in layers}

    def make_hook(layer: int) -> Any:
        def hook(_module: Any, _inputs: Any, output: Any) -> None:
            hidden = output[0] if isinstance(output, tuple | list) else output
            captured[layer].append(hidden.detach())
            if layer == deepest:
                raise _StopForward

        return hook

    n_pad = n_forward = 0
    n_overflow = dict.fromkeys(layers, 0)
    max_abs = dict.fromkeys(layers, 0.0)
    row = 0
    out_dtype = np.dtype(out_dtype)
    if out_dtype not in (np.float16, np.float32, np.float64):
        raise ValueError(f"out_dtype must be float16, float32 or float64, got {out_dtype}")
    out_max = float(np.finfo(out_dtype).max)
    handles = [blocks[layer].register_forward_hook(make_hook(layer)) for layer in layers]
    desc = f"capture layer {deepest}" if single else f"capture layers {','.join(map(str, layers))}"
    bar = tqdm(total=n_kept, desc=desc, unit="tok", disable=not progress)
    t_fwd = time.perf_counter()
    try:
        for b in range(0, len(items), batch_size):
            batch = items[b : b + batch_size]
            width = max(len(it.ids) for it in batch)
            input_ids = torch.full((len(batch), width), pad_id, dtype=torch.long)
            mask = torch.zeros((len(batch), width), dtype=torch.long)
            keep = torch.zeros((len(batch), width), dtype=torch.bool)
            for i, it in enumerate(batch):
                input_ids[i, : len(it.ids)] = torch.tensor(it.ids, dtype=torch.long)
                mask[i, : len(it.ids)] = 1
                keep[i, it.keep_from : it.keep_to] = True
            n_forward += int(mask.sum())
            n_pad += int(mask.numel() - mask.sum())
            for got in captured.values():
                got.clear()
            k = 0
            with torch.inference_mode():
                try:
                    base(
                        input_ids=input_ids.to(loaded.device),
                        attention_mask=mask.to(loaded.device),
                        use_cache=False,
                    )
                except _StopForward:
                    pass
                for layer in layers:
                    if len(captured[layer]) != 1:
                        raise RuntimeError(
                            f"capture hook on block {layer} fired {len(captured[layer])} times, expected once"
                        )
                    # kept rows only, in (document, position) order, reduced on the device before the copy
                    out = captured[layer][0]
                    kept = out[keep.to(out.device)]  # [k, d] in the model's dtype
                    wide = kept.double() if out_dtype == np.float64 else kept.float()  # exact from bf16/fp16/fp32
                    absval = wide.abs()
                    finite = torch.isfinite(absval)
                    n_overflow[layer] += int((~finite | (absval > out_max)).any(dim=1).sum())
                    if absval.numel():
                        max_abs[layer] = max(max_abs[layer], float(torch.where(finite, absval, 0.0).max()))
                    k = kept.shape[0]
                    # float16 only: values beyond 65,504 become inf (counted above), others are rounded
                    with np.errstate(over="ignore"):
                        acts[layer][row : row + k] = wide.cpu().numpy().astype(out_dtype, copy=False)
            row += k
            bar.update(k)
    finally:
        for handle in handles:
            handle.remove()
        bar.close()
    assert row == n_kept, (row, n_kept)
    seconds = time.perf_counter() - t0
    fwd_seconds = time.perf_counter() - t_fwd

    tokens = _token_table(tokenizer, items)
    stats: dict[str, Any] = {
        "model": loaded.name,
        "revision": loaded.revision,
        **({"layer": deepest} if single else {"layers": list(layers)}),
        "n_layers": loaded.n_layers,
        "hidden_size": d,
        "model_dtype": str(loaded.dtype).removeprefix("torch."),
        "device": str(loaded.device),
        "context_len": context_len,
        "batch_size": batch_size,
        "exclude_bos": exclude_bos,
        "budget": budget,
        "n_kept": n_kept,
        "budget_met": n_kept == budget,
        "short_by": budget - n_kept,
        "n_available": n_available,
        "n_cut_by_budget": n_cut,
        "n_docs": len(items),
        "n_docs_given": len(docs),
        "n_docs_unused": len(docs) - n_docs_seen,
        "n_docs_empty": n_empty,
        "n_docs_truncated": n_truncated,
        "n_bos_excluded": n_bos,
        "n_pad": n_pad,
        "n_forward_tokens": n_forward,
        "n_overflow_rows": n_overflow[deepest] if single else n_overflow,
        "max_abs": max_abs[deepest] if single else max_abs,
        "out_dtype": out_dtype.name,
        "seconds": round(seconds, 3),
        "tokenize_seconds": round(plan_seconds, 3),
        "forward_seconds": round(fwd_seconds, 3),
        "tokens_per_s": round(n_forward / fwd_seconds, 1) if fwd_seconds > 0 else None,
    }
    if n_kept < budget:
        log.warning(
            "capture: the %d documents hold only %d tokens, %d short of the budget %d",
            len(docs), n_kept, budget - n_kept, budget,
        )  # fmt: skip
    for layer in layers:
        if n_overflow[layer]:
            log.warning("capture: %d rows%s hold values beyond the %s range or not finite: they are stored as "
                        "inf/nan and excluded by normalization", n_overflow[layer],
                        "" if single else f" of layer {layer}", out_dtype.name)
    return acts, tokens, stats


def _doc_chunks(docs: Sequence[Document], size: int) -> Iterator[Sequence[Document]]:
    for i in range(0, len(docs), size):
        yield docs[i : i + size]


def _tokenize_many(
    tokenizer: Any, docs: Sequence[Document], context_len: int
) -> list[tuple[list[int], list[tuple[int, int]], bool]]:
    """``(ids, offsets, truncated)`` per document: its first ``context_len`` token ids and char offsets
    (with specials), and whether the document was longer.

    Each text is tokenized by prefixes of ``context_len * c`` characters for ``c`` in
    :data:`_CHARS_PER_TOKEN_STEPS` (one batched call per step) and in full only when every prefix is too
    short: a prefix is trusted only when it yields ``_PREFIX_MARGIN`` tokens more than the context, so
    its first ``context_len`` tokens are those of the full text."""
    fast = bool(getattr(tokenizer, "is_fast", True))
    out: list[tuple[list[int], list[tuple[int, int]], bool] | None] = [None] * len(docs)
    todo = list(range(len(docs)))
    for c in (*_CHARS_PER_TOKEN_STEPS, None):
        if not todo:
            break
        limit = None if c is None else context_len * c
        pieces = [docs[i].text if limit is None else docs[i].text[:limit] for i in todo]
        enc = tokenizer(pieces, add_special_tokens=True, return_offsets_mapping=fast, truncation=False)
        rest = []
        for j, i in enumerate(todo):
            ids = enc["input_ids"][j]
            whole = limit is None or len(docs[i].text) <= limit
            if not whole and len(ids) < context_len + _PREFIX_MARGIN:
                rest.append(i)
                continue
            if fast:
                offsets = [(int(a), int(b)) for a, b in enc["offset_mapping"][j][:context_len]]
            else:  # slow (Python) tokenizers have no offsets: spans are unknown (-1)
                offsets = [(-1, -1)] * min(len(ids), context_len)
            out[i] = (list(ids[:context_len]), offsets, len(ids) > context_len)
        todo = rest
    return out  # type: ignore[return-value]


def _token_table(tokenizer: Any, items: Sequence[_Item]) -> pd.DataFrame:
    """The :data:`TOKEN_COLUMNS` table of the kept tokens, built column-wise (no per-token Python rows)."""
    if not items:
        return pd.DataFrame({c: pd.Series([], dtype=object if c in ("token", "source") else np.int64)
                             for c in TOKEN_COLUMNS})  # fmt: skip
    lens = np.asarray([it.keep_to - it.keep_from for it in items], dtype=np.int64)
    ids = np.concatenate([np.asarray(it.ids[it.keep_from : it.keep_to], dtype=np.int64) for it in items])
    spans = np.concatenate(
        [np.asarray(it.offsets[it.keep_from : it.keep_to], dtype=np.int64).reshape(-1, 2) for it in items]
    )
    position = np.concatenate([np.arange(it.keep_from, it.keep_to, dtype=np.int32) for it in items])
    uniq, inverse = np.unique(ids, return_inverse=True)
    texts = np.empty(len(uniq), dtype=object)
    texts[:] = [tokenizer.decode([int(u)]) for u in uniq]
    sources = np.empty(len(items), dtype=object)
    sources[:] = [it.doc.source for it in items]
    return pd.DataFrame(
        {
            "row": np.arange(len(ids), dtype=np.int64),
            "doc_id": np.repeat(np.asarray([it.doc.doc_id for it in items], dtype=np.int64), lens),
            "position": position,
            "token_id": ids,
            "token": pd.Series(texts[inverse], dtype=object),
            "char_start": spans[:, 0].copy(),
            "char_end": spans[:, 1].copy(),
            "source": pd.Series(np.repeat(sources, lens), dtype=object),
        }
    )


def next_block_norm(loaded: LoadedModel, layer: int) -> dict[str, Any]:
    """The norm that the next block applies to the residual stream captured at ``layer``.

    Block ``layer + 1``'s ``input_layernorm`` (or the final norm after the last block). Returns
    ``{"weight": float32 [d], "bias": float32 [d] | None, "eps": float, "kind": str, "module": name}``
    with ``kind``

    - ``"gemma"``: ``x / sqrt(mean(x^2) + eps) * (1 + weight)`` (Gemma 1/2/3 RMSNorm),
    - ``"llama"``: ``x / sqrt(mean(x^2) + eps) * weight``,
    - ``"layernorm"``: ``(x - mean(x)) / sqrt(var(x) + eps) * weight + bias`` (GPT-2-likes).
    """
    if not 0 <= layer < loaded.n_layers:
        raise ValueError(f"layer {layer} is out of range: n_layers={loaded.n_layers}")
    blocks = decoder_layers(loaded.model)
    if layer + 1 < loaded.n_layers:
        block = blocks[layer + 1]
        name = f"layers.{layer + 1}"
        module = None
        for attr in ("input_layernorm", "ln_1", "attention_norm", "norm1"):
            module = getattr(block, attr, None)
            if module is not None:
                name += f".{attr}"
                break
    else:
        base = base_model(loaded.model)
        module = None
        for attr in ("norm", "ln_f", "final_layer_norm"):
            module = getattr(base, attr, None)
            if module is not None:
                name = attr
                break
    if module is None:
        raise ValueError(f"cannot find the norm after layer {layer} in {type(loaded.model).__name__}")
    weight = module.weight.detach().float().cpu().numpy().astype(np.float32)
    bias = getattr(module, "bias", None)
    eps = getattr(module, "eps", None)
    if eps is None:
        eps = getattr(module, "variance_epsilon", 1e-6)
    cls = type(module).__name__
    if isinstance(module, torch.nn.LayerNorm):
        kind = "layernorm"
    elif "gemma" in cls.lower():
        kind = "gemma"
    elif "rmsnorm" in cls.lower():
        kind = "llama"
    else:
        raise ValueError(f"unsupported norm {cls} after layer {layer}")
    return {
        "weight": weight,
        "bias": None if bias is None else bias.detach().float().cpu().numpy().astype(np.float32),
        "eps": float(eps),
        "kind": kind,
        "module": name,
        "class": cls,
    }
