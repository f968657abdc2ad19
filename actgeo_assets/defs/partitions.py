"""Partitions: dataset shards, and pairs of shards (i <= j) for the all-pairs join.

Both are dynamic: the shard sensor (automation.py), ``actgeo run`` or the UI's "add partition" register
keys such as ``shard-000`` and ``shard-000__shard-001``.
"""

from __future__ import annotations

from dagster import DynamicPartitionsDefinition

SHARDS = "actgeo_shards"
SHARD_PAIRS = "actgeo_shard_pairs"

shard_partitions = DynamicPartitionsDefinition(name=SHARDS)
pair_partitions = DynamicPartitionsDefinition(name=SHARD_PAIRS)
