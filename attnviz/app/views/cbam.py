"""CBAM: the spatial maps (with Grad-CAM beside them), the channel gates, drill-down and Intervene."""

from __future__ import annotations

import streamlit as st

from ... import figures
from .. import ui
from ..page import Page
from ..widgets import (
    cam_chart,
    chart,
    clickable_chart,
    drill_down,
    intervention_panel,
    open_view,
    overlay_controls,
    wkey,
)

VIEW = "cbam"


def render(page: Page) -> None:
    shown = open_view(page, VIEW)
    if shown is None:
        return
    a = shown.analysis
    opacity, cmap = overlay_controls(VIEW)
    cols = st.columns(2)
    bg = figures.image_uri(a.display)
    for i, (path, m) in enumerate(a.cbam_spatial.items()):
        with cols[i % 2]:
            chart(figures.overlay(a.display, m, f"{figures.short_name(path)} ({m.shape[0]}×{m.shape[1]})",
                                  opacity=opacity, colorscale=cmap, background=bg, extent=a.image_size,
                                  width_px=ui.MAP_WIDTH["cbam"]), key=wkey(VIEW, f"spatial-{path}", shown))
    with cols[len(a.cbam_spatial) % 2]:
        cam_chart(page, shown, VIEW, ui.MAP_WIDTH["cbam"], (opacity, cmap))
    st.caption(ui.EXPLAIN["grad_cam_beside"])
    if a.cbam_channel:
        clickable_chart(figures.gates_heatmap(a.cbam_channel, "CBAM channel gates of every block: click one",
                                              clickable=True), wkey(VIEW, "overview", shown), VIEW, shown)
        path = st.selectbox("Channel gates of block", list(a.cbam_channel), format_func=figures.short_name,
                            key=wkey(VIEW, "block", shown))
        clickable_chart(figures.gate_bars(a.cbam_channel[path], figures.short_name(path),
                                          sort=st.toggle("Sort", key=wkey(VIEW, "sort"))),
                        wkey(VIEW, "bars", shown), VIEW, shown, path)
        drill_down(page, shown, a.cbam_channel, VIEW, (opacity, cmap))
    intervention_panel(page, shown, VIEW, list(a.cbam_channel) or list(a.cbam_spatial))
