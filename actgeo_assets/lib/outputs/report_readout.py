"""A card's mid-depth logit lens as HTML (the report and the explorer show the same markup): the tokens
that beat the control of :func:`actgeo_assets.lib.analysis.readout.component_lens`, with one line saying
what the control was and what was dropped, or that the lens shows nothing beyond it."""

from __future__ import annotations

import html
from collections.abc import Iterable, Mapping
from typing import Any

from actgeo_assets.lib.analysis.cards import Card
from actgeo_assets.lib.analysis.tokens import quote_token

_LENS = ("Mid-depth logit lens (the component's mean activation minus the corpus mean, through the final "
         "norm and unembedding; an indirect reading, unlike the two above)")


def _e(v: Any) -> str:
    return html.escape(str(v))


def _chips(items: Iterable[tuple[str, str]], cls: str) -> str:
    lis = "".join(f'<li><span class="tok">{_e(a)}</span> {_e(b)}</li>' for a, b in items)
    return f'<ul class="chips {cls}">{lis}</ul>'


def lens_id(card: Card) -> str:
    """The lens block's id, unique on a page of cards: ``lens-<rank>`` (``lens-<rank>-sub`` on a sub-card)."""
    return f"lens-{card.rank}{'-sub' if card.subcomponent_of else ''}"


def lens_html(card: Card) -> str:
    """The card's lens block: ``<div class="lens" id="lens-<rank>[-sub]">`` with a ``div.meta`` line and the
    chips ``<ul class="chips readout">`` (token, logit and its margin over the control groups); the line
    names the control and what was dropped, or says the lens shows nothing beyond the control. ``""`` when
    the card has no lens (``card.readout is None``). A card without ``extra["lens"]`` (built before the
    control existed) shows its tokens marked as not compared with any control."""
    if card.readout is None:
        return ""
    meta: Mapping[str, Any] = card.extra.get("lens") or {}
    head = f'<div class="lens" id="{_e(lens_id(card))}">'
    if not meta or (meta.get("control") is None and "k" not in meta):
        line = f"{_LENS}, not compared with any control: read these tokens with caution.{_dropped(meta, False)}"
        chips = _chips(((quote_token(t), f"{v:.2f}") for t, v in card.readout), "readout")  # as before the control
        return f'{head}<div class="meta warn">{_e(line)}</div>{chips}</div>'
    k, size, alpha = int(meta["k"]), int(meta["group_size"]), float(meta["alpha"])
    above = int(meta.get("controls_above_threshold", 0))
    test = (f"exceeds that of each of {k} random groups of {size:,} activations outside the component by "
            f"more than {float(meta['threshold']):.1f}, a margin only {above} of the groups reach on their own "
            f"best token ({alpha:.0%} family-wise)")
    if not card.readout:
        best = meta.get("best_margin")
        largest = "" if best is None else f" (the component's largest margin: {float(best):.1f})"
        line = f"{_LENS}: nothing beyond the control. No token's logit {test}{largest}.{_dropped(meta)}"
        return f'{head}<div class="meta readout-none">{_e(line)}</div></div>'
    margins = list(meta.get("margins") or [])
    if len(margins) != len(card.readout):
        margins = [None] * len(card.readout)
    line = f"{_LENS}: tokens whose logit {test}; logit, then + margin.{_dropped(meta)}"
    chips = _chips(((quote_token(t), f"{v:.1f}" + ("" if m is None else f" +{float(m):.1f}"))
                    for (t, v), m in zip(card.readout, margins, strict=True)), "readout")
    return f'{head}<div class="meta">{_e(line)}</div>{chips}</div>'


def _dropped(meta: Mapping[str, Any], with_control: bool = True) -> str:
    """``" Dropped from the plain lens's 8 strongest tokens: 1 unreadable (...), 7 absent from ... and 2
    below the control."`` (empty when nothing was dropped or nothing is known)."""
    plain = meta.get("plain_top")
    if not plain:
        return ""
    unreadable = int(meta.get("dropped_unreadable", 0))
    absent = int(meta.get("dropped_not_in_corpus", 0))
    below = int(meta.get("dropped_below_control", 0)) if with_control else 0
    parts = []
    if unreadable - absent:
        parts.append(f"{unreadable - absent} unreadable (byte pieces, control or special tokens)")
    if absent:
        parts.append(f"{absent} absent from the run's sampled activations")
    if below:
        parts.append(f"{below} below the control")
    if not parts:
        return ""
    listed = parts[0] if len(parts) == 1 else ", ".join(parts[:-1]) + " and " + parts[-1]
    return f" Dropped from the plain lens's {len(plain)} strongest tokens: {listed}."
