"""Compare: SE, CBAM and self-attention side by side, each with Grad-CAM under it."""

from __future__ import annotations

import streamlit as st

from ... import figures
from .. import ui
from ..page import Page, Shown
from ..widgets import cam_chart, chart, pick_model, wkey, wrapping_columns

VIEW = "compare"


def _layer(kind: str, layers: list[str], shown: Shown) -> str:
    return st.selectbox("Layer", layers, index=ui.default_layer(kind, layers), format_func=figures.short_name,
                        key=wkey(VIEW, f"{kind}-layer", shown))


def _column(page: Page, title: str, kind: str, kinds: tuple[str, ...], part: str) -> Shown | None:
    """One column's heading, what its kind does, and its model."""
    st.subheader(title)
    st.caption(ui.EXPLAIN[kind])
    return pick_model(page, VIEW, kinds, part=part)


def render(page: Page) -> None:
    width = ui.MAP_WIDTH["compare"]
    se_col, cbam_col, sa_col = wrapping_columns(3, "compare", "16rem")
    with se_col:
        shown = _column(page, "SE: channels", "se", ("se",), "se-model")
        if shown:
            a = shown.analysis
            path = _layer("se", list(a.se), shown)
            chart(figures.gate_bars(a.se[path], f"{figures.short_name(path)} gates", sort=True),
                  key=wkey(VIEW, "se-bars", shown))
            cam_chart(page, shown, f"{VIEW}-se", width)
    with cbam_col:
        shown = _column(page, "CBAM: channels + where", "cbam", ("cbam_spatial",), "cbam-model")
        if shown:
            a = shown.analysis
            path = _layer("cbam", list(a.cbam_spatial), shown)
            chart(figures.overlay(a.display, a.cbam_spatial[path], f"{figures.short_name(path)} spatial gate",
                                  extent=a.image_size, width_px=width), key=wkey(VIEW, "cbam-map", shown))
            cam_chart(page, shown, f"{VIEW}-cbam", width)
    with sa_col:
        # an axial layer's composed map is in self_attn too
        shown = _column(page, "Self-attention: point to point", "self_attn", ("self_attn", "axial_height"),
                        "sa-model")
        if shown:
            a = shown.analysis
            layer = _layer("self_attn", list(a.self_attn), shown)
            q = ui.centre(a.image_size)
            chart(figures.query_mean(a.display, a.query(layer, *q), q, layer, extent=a.image_size, width_px=width,
                                     zmax=float(a.self_attn[layer].max()), scale=next(iter(figures.ATTENTION_SCALES)),
                                     mass=figures.DEFAULT_MASS), key=wkey(VIEW, "sa-map", shown))
            st.caption("Query: the image centre (choose another in the Self-attention view).")
            cam_chart(page, shown, f"{VIEW}-sa", width)
    st.caption(ui.EXPLAIN["grad_cam"])
