"""The pipeline's stages, one module per module of ``defs/assets/``; the Dagster assets are thin wrappers.

- :mod:`.activations`: ``capture_shard``, ``compute_mean``, ``normalize_shard`` (raw_activations,
  activation_mean, normalized);
- :mod:`.graph`: ``compute_tile``, ``merge_components``, ``load_components``, ``spot_check_edges``
  (edge_tiles, components);
- :mod:`.cards`: ``build_run_cards``, ``audit_cards`` (component_cards);
- :mod:`.lookup`: ``build_lookup_index`` (lookup), ``lookup_text`` (`actgeo lookup`);
- :mod:`.layers`: ``compare_layers`` (asset layers, job layers_job, `actgeo layers`), ``layer_section``;
- :mod:`.common`: the run's model, its shards read back, rows of all shards by global index.

Each stage reads what the previous one wrote (paths in :class:`~actgeo_assets.lib.store.layout.RunLayout`),
computes with the library modules, writes atomically and returns a frozen dataclass of what it did.
Every stage runs without Dagster (tests, notebooks, the CLI).
"""
