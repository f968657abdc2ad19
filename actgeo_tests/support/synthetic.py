"""Hand-built data that test modules of several folders share (no model, no run): small, with every number
chosen so that the expected answer is known."""

from __future__ import annotations

import numpy as np
import pandas as pd

from actgeo_tests.support.oracle import clustered


def card_rows() -> tuple[np.ndarray, np.ndarray, pd.DataFrame, pd.DataFrame]:
    """Labels [20], float32 unit rows [20, 3], token table [20] and documents [4] of a hand-built partition.

    label 0 (giant, rows 0-9) near e0; label 1 (rank 2, rows 10-15) near e1 with known cosines;
    label 2 (rank 3, rows 16-18, all ' self' in one Github doc); label 3 a singleton (row 19).
    Rank 2's members by cosine to their mean: 10 (doc A) > 11 (A) > 12 (A) ~ 13 (B) > 15 (C) > 14 (B), so the
    most central member of each document is 10 (A), 13 (B), 15 (C), and the next most central is 11.
    """
    labels = np.array([0] * 10 + [1] * 6 + [2] * 3 + [3], dtype=np.int64)
    x = np.zeros((20, 3))
    x[:10] = [1, 0.05, 0]
    x[:10, 2] = np.linspace(0, 0.1, 10)
    # rank 2: tilt away from e1 grows in the order 10, 11, 13, 12, 15, 14
    tilt = {10: 0.0, 11: 0.05, 13: -0.1, 12: 0.15, 15: -0.2, 14: 0.25}
    for r, a in tilt.items():
        x[r] = [0, 1, a]
    x[16:19] = [0.1, 0, 1]
    x[19] = [-1, 0, 0]
    unit = (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)

    text_a = "line one\n\nline two\n\nline three\n\nend"
    text_b = "alpha\n\nbeta\n\ngamma"
    text_c = "<b>x</b>\n\ny"
    text_g = "class A:\n    def f(self):\n        return self.x + self.y\n"
    docs = pd.DataFrame({
        "doc_id": [1, 2, 3, 4],
        "source": ["Pile-CC", "Wikipedia (en)", "Github", "Github"],
        "text": [text_a, text_b, text_c, text_g],
    })
    spans: list[tuple[int, int, int]] = []  # (doc, start, end)
    for i in range(10):
        spans.append((1, i % 5, i % 5 + 1))
    a_nl = [i for i in range(len(text_a)) if text_a.startswith("\n\n", i) and (i == 0 or text_a[i - 1] != "\n")]
    b_nl = [i for i in range(len(text_b)) if text_b.startswith("\n\n", i) and (i == 0 or text_b[i - 1] != "\n")]
    c_nl = text_c.index("\n\n")
    # rows 10, 11, 12 in doc A; 13, 14 in doc B; 15 in doc C; all '\n\n'
    spans += [(1, a_nl[0], a_nl[0] + 2), (1, a_nl[1], a_nl[1] + 2), (1, a_nl[2], a_nl[2] + 2),
              (2, b_nl[0], b_nl[0] + 2), (2, b_nl[1], b_nl[1] + 2), (3, c_nl, c_nl + 2)]
    selfs = [i - 1 for i in range(len(text_g)) if text_g.startswith("self", i)]  # ' self' / '(self'
    spans += [(4, s, s + 5) for s in selfs[:3]]
    spans.append((4, 0, 5))
    doc_text = dict(zip(docs.doc_id, docs.text, strict=True))
    doc_src = dict(zip(docs.doc_id, docs.source, strict=True))
    tokens = pd.DataFrame({
        "row": np.arange(20),
        "doc_id": [d for d, _, _ in spans],
        "position": np.arange(20) % 7,
        "token_id": np.arange(20) + 100,
        "token": [doc_text[d][s:e] for d, s, e in spans],
        "char_start": [s for _, s, _ in spans],
        "char_end": [e for _, _, e in spans],
        "source": [doc_src[d] for d, _, _ in spans],
    })
    tokens.loc[16:18, "token"] = " self"  # the token table's text (not the span) is what top_tokens count
    return labels, unit, tokens, docs


def layer_acts() -> tuple[dict[int, np.ndarray], dict[int, dict]]:
    """Three 'layers' of 240 rows in 16 dims: clusters, rescaled per row, plus a massive shared dimension
    (grown with depth) that makes plain L2 see every pair as similar; and a Gemma-style norm weight each."""
    rng = np.random.default_rng(7)
    acts, weights = {}, {}
    for i, layer in enumerate((1, 4, 6)):
        x = clustered(240, 16, seed=layer).astype(np.float64) * rng.lognormal(0, 0.5, (240, 1))
        x[:, 3] += 2.0 * (i + 1)
        acts[layer] = x.astype(np.float32)
        weights[layer] = {"weight": rng.uniform(-0.5, 1.5, 16).astype(np.float32), "kind": "gemma", "eps": 1e-6}
    return acts, weights
