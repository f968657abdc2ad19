"""The study this project reproduces, as published, and how a run compares with it.

"Normalization Makes Activation Geometry Imaginable" (https://liusida.com/research-notes/norm_act_geometry/):
Gemma 2 2B, the residual stream at layer 12 (the output of block 12 = transformers ``hidden_states[13]`` =
TransformerLens ``blocks.12.hook_resid_post``, Gemma Scope's numbering), over NeelNanda/pile-10k, 1,000,000
activations, L2-normalized, every pair with cosine >= 0.7 linked: 136,410 connected components, the largest
holding about 826,000 activations; outside it 19,916 non-singleton components and 116,494 singletons (11.6%
of the activations). Those three parts add up to 136,411 components, one more than the published total: the
page's own figures, quoted as published. The page names the model as ``google/gemma-2-2b`` (released
unquantized) and does not state the dtype the activations were computed in.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd

from actgeo_assets.lib.analysis.numbers import format_number

#: The study's setup, in this project's setting names.
STUDY_SETUP: dict[str, Any] = {
    "model": "google/gemma-2-2b",
    "layer": 12,
    "corpus": "NeelNanda/pile-10k",
    "n": 1_000_000,
    "normalization": "l2",
    "threshold": 0.7,
}
#: The study's published figures (``non_singleton``: components of two or more activations besides the
#: largest; ``singletons``: components of one activation).
STUDY_RESULTS: dict[str, Any] = {"n_components": 136_410, "largest": 826_000, "largest_fraction": 0.826,
                                 "non_singleton": 19_916, "singletons": 116_494}
#: The study's weights as the page names them.
STUDY_WEIGHTS = "google/gemma-2-2b as released (not quantized; the compute dtype is not stated)"

LAYER_CONVENTION = ("layer L is the output of block L: transformers hidden_states[L+1], TransformerLens "
                    "blocks.L.hook_resid_post (Gemma Scope's numbering)")

#: Columns :func:`plain_l2_result` reads from the layer comparison's geometry table.
_GEOMETRY_COLUMNS = ("layer", "normalization", "threshold", "n", "n_components", "giant_fraction")


def plain_l2_result(layers_doc: pd.DataFrame | Sequence[Mapping[str, Any]] | Mapping[str, Any], layer: int,
                    threshold: float) -> dict[str, Any] | None:
    """The study's own normalization (plain ``l2``) on this model, from the layer comparison (the ``layers``
    asset): its geometry table (``layers/geometry.parquet`` or ``.csv``: one row per layer, normalization and
    threshold; ``lib/analysis/layers.py`` ``TABLE_COLUMNS``), as a DataFrame, a list of its records, or a
    mapping holding them under ``"geometry"`` or ``"table"``.

    Returns ``{"layer", "threshold", "normalization": "l2", "n", "n_components", "largest_fraction",
    "singletons", "mean_cosine"}`` (the last two None when the table lacks them) for the row of ``layer`` at
    ``threshold`` (matched within 1e-9), or None when the comparison did not measure that layer or threshold.
    Raises ``ValueError`` naming the missing columns, or when two rows match.
    """
    if isinstance(layers_doc, Mapping):
        records = layers_doc.get("geometry", layers_doc.get("table"))
        if records is None:
            raise ValueError(f"plain_l2_result: the mapping has no 'geometry' or 'table' (keys {sorted(layers_doc)})")
        table = records if isinstance(records, pd.DataFrame) else pd.DataFrame(list(records))
    elif isinstance(layers_doc, pd.DataFrame):
        table = layers_doc
    else:
        table = pd.DataFrame(list(layers_doc))
    missing = [c for c in _GEOMETRY_COLUMNS if c not in table.columns]
    if missing:
        raise ValueError(f"plain_l2_result: the geometry table lacks columns {missing} (it has {list(table.columns)})")
    hit = table[(table["normalization"].astype(str) == "l2") & (table["layer"].astype(int) == int(layer))
                & np.isclose(table["threshold"].astype(float), float(threshold), rtol=0.0, atol=1e-9)]
    if hit.empty:
        return None
    if len(hit) > 1:
        raise ValueError(f"plain_l2_result: {len(hit)} rows of the geometry table are l2 at layer {layer}, "
                         f"threshold {threshold}")
    row = hit.iloc[0]

    def _opt(col: str, cast: type) -> Any:
        return cast(row[col]) if col in hit.columns and pd.notna(row[col]) else None

    return {"layer": int(row["layer"]), "threshold": float(row["threshold"]), "normalization": "l2",
            "n": int(row["n"]), "n_components": int(row["n_components"]),
            "largest_fraction": float(row["giant_fraction"]), "singletons": _opt("singletons", int),
            "mean_cosine": _opt("mean_cosine", float)}


def _quantized(weights: str) -> bool:
    """Whether a weights description (:func:`actgeo_assets.lib.capture.model.weights_format`) says quantized."""
    w = weights.lower()
    return "quantized" in w and "not quantized" not in w and "unquantized" not in w


def _singletons(count: Any, n: Any) -> str:
    if count is None or not n:
        return "not recorded"
    return f"{int(count):,} ({int(count) / int(n):.1%} of activations)"


def compare_with_study(run_key: Mapping[str, Any], summary: Mapping[str, Any], *,
                       plain_l2: Mapping[str, Any] | None = None, weights: str | None = None) -> dict[str, Any]:
    """The study beside this run: ``rows`` [(quantity, study, this run)], ``differences`` (setup items
    that differ, as text), ``comparable`` (True only when every setup item matches) and ``verdict`` (a
    sentence a reader can act on).

    ``summary``: the run's component summary (``n``, ``n_components``, ``largest``, ``largest_fraction``;
    ``non_singleton`` and ``singletons`` when known: their rows say "not recorded" otherwise).
    ``plain_l2``: what the study's own normalization gives on this model (:func:`plain_l2_result`): a row,
    and a sentence of the verdict when the run normalizes otherwise. ``weights``: this run's weights
    (:func:`actgeo_assets.lib.capture.model.weights_format`): a row, and a setup difference when they are
    quantized."""
    run = {"model": run_key.get("model"), "layer": run_key.get("layer"), "corpus": run_key.get("corpus"),
           "n": summary.get("n"), "normalization": run_key.get("normalization"),
           "threshold": run_key.get("threshold")}
    differences = [f"{k}: study {STUDY_SETUP[k]!r}, this run {run[k]!r}" for k in STUDY_SETUP
                   if run[k] != STUDY_SETUP[k]]
    if weights is not None and _quantized(weights):
        differences.append(f"weights: study {STUDY_WEIGHTS!r}, this run {weights!r}")
    context = run_key.get("context_len")
    rows = [(k, format_number(STUDY_SETUP[k]), format_number(run[k])) for k in STUDY_SETUP]
    if weights is not None:
        rows.append(("weights", STUDY_WEIGHTS, weights))
    rows += [("context length (tokens)", "not stated", format_number(context)),
             ("components", format_number(STUDY_RESULTS["n_components"]), format_number(summary.get("n_components"))),
             ("largest component", f"~{STUDY_RESULTS['largest']:,}", format_number(summary.get("largest"))),
             ("largest fraction", f"~{STUDY_RESULTS['largest_fraction']:.1%}",
              f"{float(summary.get('largest_fraction', 0.0)):.1%}"),
             ("non-singleton components besides the largest", format_number(STUDY_RESULTS["non_singleton"]),
              "not recorded" if summary.get("non_singleton") is None else format_number(summary.get("non_singleton"))),
             ("singletons", _singletons(STUDY_RESULTS["singletons"], STUDY_SETUP["n"]),
              _singletons(summary.get("singletons"), summary.get("n")))]
    if plain_l2 is not None:
        k = int(plain_l2["n_components"])
        rows.append(("plain L2 (the study's normalization) on this model",
                     f"{STUDY_RESULTS['n_components']:,} components, largest ~{STUDY_RESULTS['largest_fraction']:.1%} "
                     f"(layer {STUDY_SETUP['layer']}, cosine {STUDY_SETUP['threshold']}, {STUDY_SETUP['n']:,} activations)",
                     f"{k:,} component{'' if k == 1 else 's'}, largest {float(plain_l2['largest_fraction']):.1%} "
                     f"(layer {plain_l2['layer']}, cosine {plain_l2['threshold']}, {int(plain_l2['n']):,} activations "
                     f"of {plain_l2.get('source', 'the layer comparison')})"))
    comparable = not differences
    if comparable:
        verdict = "Same setup as the study: the numbers are directly comparable."
    else:
        n_note = (" The component count and the giant's share both depend strongly on N (see the N-scaling "
                  "curve), so counts from a different N are not comparable." if run["n"] != STUDY_SETUP["n"]
                  else "")
        verdict = (f"Not comparable with the study's figures: {len(differences)} setup item"
                   f"{'s differ' if len(differences) > 1 else ' differs'} ({', '.join(d.split(':')[0] for d in differences)})."
                   + n_note)
    if plain_l2 is not None and run["normalization"] != "l2":
        k = int(plain_l2["n_components"])
        verdict += (f" The study's own normalization, plain L2, gives this model {k:,} component{'' if k == 1 else 's'} "
                    f"at layer {plain_l2['layer']} and cosine {plain_l2['threshold']} (the largest holds "
                    f"{float(plain_l2['largest_fraction']):.1%} of {int(plain_l2['n']):,} activations); this run "
                    f"uses {run['normalization']}.")
    if weights is not None and _quantized(weights):
        verdict += f" This run's weights: {weights}. The study's: not quantized."
    return {"rows": rows, "differences": differences, "comparable": comparable, "verdict": verdict,
            "layer_convention": LAYER_CONVENTION}
