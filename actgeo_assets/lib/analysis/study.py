"""The study this project reproduces, as published, and how a run compares with it.

"Normalization Makes Activation Geometry Imaginable": Gemma 2 2B, the residual stream at layer 12 (the
output of block 12 = transformers ``hidden_states[13]`` = TransformerLens ``blocks.12.hook_resid_post``,
Gemma Scope's numbering), over NeelNanda/pile-10k, 1,000,000 activations, L2-normalized, every pair with
cosine >= 0.7 linked: 136,410 connected components, the largest holding about 826,000 activations.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

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
#: The study's published figures.
STUDY_RESULTS: dict[str, Any] = {"n_components": 136_410, "largest": 826_000, "largest_fraction": 0.826}

LAYER_CONVENTION = ("layer L is the output of block L: transformers hidden_states[L+1], TransformerLens "
                    "blocks.L.hook_resid_post (Gemma Scope's numbering)")


def compare_with_study(run_key: Mapping[str, Any], summary: Mapping[str, Any]) -> dict[str, Any]:
    """The study beside this run: ``rows`` [(quantity, study, this run)], ``differences`` (setup items
    that differ, as text), ``comparable`` (True only when every setup item matches) and ``verdict`` (a
    sentence a reader can act on)."""
    run = {"model": run_key.get("model"), "layer": run_key.get("layer"), "corpus": run_key.get("corpus"),
           "n": summary.get("n"), "normalization": run_key.get("normalization"),
           "threshold": run_key.get("threshold")}
    differences = [f"{k}: study {STUDY_SETUP[k]!r}, this run {run[k]!r}" for k in STUDY_SETUP
                   if run[k] != STUDY_SETUP[k]]
    context = run_key.get("context_len")
    rows = [(k, format_number(STUDY_SETUP[k]), format_number(run[k])) for k in STUDY_SETUP]
    rows += [("context length (tokens)", "not stated", format_number(context)),
             ("components", format_number(STUDY_RESULTS["n_components"]), format_number(summary.get("n_components"))),
             ("largest component", f"~{STUDY_RESULTS['largest']:,}", format_number(summary.get("largest"))),
             ("largest fraction", f"~{STUDY_RESULTS['largest_fraction']:.1%}",
              f"{float(summary.get('largest_fraction', 0.0)):.1%}")]
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
    return {"rows": rows, "differences": differences, "comparable": comparable, "verdict": verdict,
            "layer_convention": LAYER_CONVENTION}
