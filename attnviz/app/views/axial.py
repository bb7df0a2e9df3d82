"""Axial attention: for a clicked pixel, each layer's height step along its column, width
step along its row, and the composed map of both over the whole image."""

from __future__ import annotations

import streamlit as st

from ... import figures
from .. import ui
from ..click_image import click_image
from ..page import Page
from ..widgets import chart, open_view, wkey, wrapping_columns
from .self_attention import clicked_query

VIEW = "axial"


@st.fragment
def render(page: Page) -> None:
    shown = open_view(page, VIEW)
    if shown is None:
        return
    a = shown.analysis
    click_key, q = clicked_query(page, shown, VIEW)
    left, right = wrapping_columns(2, wkey(VIEW, "click-row"), "18rem")  # one above the other on a narrow page
    with left:
        click_image(ui.marked_image(a.display, q, extent=a.image_size), key=click_key)
    with right:
        st.caption("Click the image to choose the query pixel. For each layer below: the height step's weights "
                   "along the query's column, the width step's along its row, and the composed map of both "
                   "over the whole image; each from 0 to its own largest weight, its colour bar marking the "
                   "uniform level.")
    for layer in a.self_attn:
        h, w = a.self_attn_grid[layer]
        row, col = a.cell(layer, *q)
        along_column, along_row = a.axial_query(layer, *q)
        st.markdown(f"**{figures.short_name(layer)}**: query pixel ({q[0]:.0f}, {q[1]:.0f}) → cell "
                    f"(row {row}, col {col}) of {h}×{w}")
        heads = along_column.shape[0]
        options = [f"mean of {heads} heads", *(f"head {i}" for i in range(heads))]
        head = options.index(st.radio("Heads", options, horizontal=True,
                                      key=wkey(VIEW, f"head-{layer}", shown))) - 1
        figs = figures.axial_panels(a.display, along_column, along_row, a.query(layer, *q), q, (row, col), layer,
                                    head=None if head < 0 else head, extent=a.image_size,
                                    width_px=ui.MAP_WIDTH["axial"])
        # two across (the steps, then the composed map) on a wide page, one under the other on a narrow one
        panels = wrapping_columns(3, wkey(VIEW, f"panels-{layer}"), "20rem")
        for i, (column, fig) in enumerate(zip(panels, figs)):
            with column:
                chart(fig, key=wkey(VIEW, f"{layer}-{i}", shown))
