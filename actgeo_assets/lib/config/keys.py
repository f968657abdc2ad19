"""The formats of a run's identifiers: the shard-pair partition key (``shard-AAA__shard-BBB``) and the run
id (a hash of the run key)."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from typing import Any


def pair_key(a: str, b: str) -> str:
    """Partition key of the tile between shards ``a`` and ``b`` (``a <= b``)."""
    if a > b:
        a, b = b, a
    return f"{a}__{b}"


def split_pair_key(key: str) -> tuple[str, str]:
    """Inverse of :func:`pair_key`; raises ValueError naming the key when malformed."""
    parts = key.split("__")
    if len(parts) != 2 or not all(parts):
        raise ValueError(f"not a shard-pair partition key: {key!r} (expected 'shard-AAA__shard-BBB')")
    return parts[0], parts[1]


def run_id_of(run_key: Mapping[str, Any]) -> str:
    """12 hex chars of sha256 over ``json.dumps(run_key, sort_keys=True)``: the id of a run in files and SQL."""
    return hashlib.sha256(json.dumps(dict(run_key), sort_keys=True).encode()).hexdigest()[:12]
