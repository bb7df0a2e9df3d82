"""SE: one gate in 0..1 per channel and block; the class profile; drill-down and Intervene."""

from __future__ import annotations

import streamlit as st

from ... import figures
from .. import ui
from ..page import Page
from ..widgets import chart, clickable_chart, drill_down, intervention_panel, overlay_controls, pick_model, wkey

VIEW = "se"


def render(page: Page) -> None:
    shown = pick_model(page, VIEW)
    if shown is None:
        return
    a = shown.analysis
    st.caption(ui.EXPLAIN["se"])
    clickable_chart(figures.gates_heatmap(a.se, "SE gates of every block (rows) and channel (columns): click one",
                                          clickable=True), wkey(VIEW, "overview", shown), VIEW, shown)
    drill_down(page, shown, a.se, VIEW, overlay_controls(VIEW))
    intervention_panel(page, shown, VIEW, list(a.se))
    prof = shown.handle.profile
    if prof is not None:
        st.markdown(f"**Class profile** (the SE paper's analysis): mean gate per channel for each class over "
                    f"{prof.images} Imagenette val images, with this image in black.")
        block = st.selectbox("Block", list(prof.means), index=len(prof.means) - 1, format_func=figures.short_name,
                             key=wkey(VIEW, "profile-block", shown))
        chart(figures.profile_curves(prof, block, a.se.get(block)), key=wkey(VIEW, "profile", shown))
    sort = st.toggle("Sort channels by gate", key=wkey(VIEW, "sort"))
    cols = st.columns(2)
    for i, (path, g) in enumerate(a.se.items()):
        with cols[i % 2]:
            clickable_chart(figures.gate_bars(g, f"{figures.short_name(path)}: {len(g)} channels", sort=sort),
                            wkey(VIEW, f"bars-{path}", shown), VIEW, shown, path)
    st.caption("Click a bar to see that channel in the drill-down above.")
