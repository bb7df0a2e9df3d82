"""CBAM: the spatial maps (with Grad-CAM beside them), the channel gates, drill-down and Intervene."""

from __future__ import annotations

import streamlit as st

from ... import figures
from ...kinds import kinds_of_view
from .. import ui
from ..page import Page, Shown
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
NOTHING = ""


def beside(page: Page, shown: Shown) -> Shown | None:
    """Another CBAM model to show beside ``shown`` (e.g. the unshared CBAM beside the shared
    one), where the page has one and the user picks it; None by default."""
    others = {s.key: s for s in page.with_kinds(kinds_of_view(VIEW)) if s.key != shown.key}
    if not others:
        return None
    picked = st.selectbox("Beside it", [NOTHING, *others], key=wkey(VIEW, "beside", shown),
                          format_func=lambda k: others[k].label if k else "nothing")
    return others.get(picked)


def spatial_map(shown: Shown, path: str, opacity: float, cmap: str, bg: str) -> None:
    a = shown.analysis
    m = a.cbam_spatial[path]
    chart(figures.overlay(a.display, m, f"{figures.short_name(path)} ({m.shape[0]}×{m.shape[1]})",
                          opacity=opacity, colorscale=cmap, background=bg,
                          extent=a.image_size, width_px=ui.MAP_WIDTH["cbam"]), key=wkey(VIEW, f"spatial-{path}", shown))


def render(page: Page) -> None:
    shown = open_view(page, VIEW)
    if shown is None:
        return
    a = shown.analysis
    other = beside(page, shown)
    opacity, cmap = overlay_controls(VIEW)
    bg = figures.image_uri(a.display)  # the same photo under every map
    if other is None:
        cols = st.columns(2)
        for i, path in enumerate(a.cbam_spatial):
            with cols[i % 2]:
                spatial_map(shown, path, opacity, cmap, bg)
        with cols[len(a.cbam_spatial) % 2]:
            cam_chart(page, shown, VIEW, ui.MAP_WIDTH["cbam"], (opacity, cmap))
    else:  # layer by layer, the same place in both (by order: a timm CBAM names its blocks otherwise)
        st.caption(ui.BESIDE_LINE.format(left=shown.label, right=other.label))
        left, right = st.columns(2)
        left.markdown(f"**{shown.label}**")
        right.markdown(f"**{other.label}**")
        for path, other_path in zip(a.cbam_spatial, other.analysis.cbam_spatial):
            left, right = st.columns(2)
            with left:
                spatial_map(shown, path, opacity, cmap, bg)
            with right:
                spatial_map(other, other_path, opacity, cmap, bg)
        left, right = st.columns(2)
        with left:
            cam_chart(page, shown, VIEW, ui.MAP_WIDTH["cbam"], (opacity, cmap))
        with right:
            cam_chart(page, other, f"{VIEW}-beside", ui.MAP_WIDTH["cbam"], (opacity, cmap))
    st.caption(ui.EXPLAIN["grad_cam_beside"])
    if a.cbam_channel:
        clickable_chart(figures.gates_heatmap(a.cbam_channel, "CBAM channel gates of every block: click one",
                                              clickable=True), wkey(VIEW, "overview", shown), VIEW, shown)
        if other is not None and other.analysis.cbam_channel:
            chart(figures.gates_heatmap(other.analysis.cbam_channel, f"{other.label}: channel gates of every block"),
                  key=wkey(VIEW, "overview-beside", other))
        path = st.selectbox("Channel gates of block", list(a.cbam_channel), format_func=figures.short_name,
                            key=wkey(VIEW, "block", shown))
        clickable_chart(figures.gate_bars(a.cbam_channel[path], figures.short_name(path),
                                          sort=st.toggle("Sort", key=wkey(VIEW, "sort"))),
                        wkey(VIEW, "bars", shown), VIEW, shown, path)
        drill_down(page, shown, a.cbam_channel, VIEW, (opacity, cmap))
    intervention_panel(page, shown, VIEW, list(a.cbam_channel) or list(a.cbam_spatial))
