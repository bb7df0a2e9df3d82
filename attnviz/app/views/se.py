"""SE: one gate in 0..1 per channel and block; the class profile; drill-down and Intervene."""

from __future__ import annotations

import streamlit as st

from ... import figures
from ..page import Page
from ..widgets import (
    chart,
    clickable_chart,
    drill_down,
    intervention_panel,
    open_view,
    overlay_controls,
    wkey,
    wrapping_columns,
)

VIEW = "se"


def render(page: Page) -> None:
    shown = open_view(page, VIEW)
    if shown is None:
        return
    a = shown.analysis
    clickable_chart(figures.gates_heatmap(a.se, "SE gates of every block (rows) and channel (columns): click one",
                                          clickable=True), wkey(VIEW, "overview", shown), VIEW, shown)
    drill_down(page, shown, a.se, VIEW, overlay_controls(VIEW))
    intervention_panel(page, shown, VIEW, list(a.se))
    prof = shown.handle.profile
    if prof is not None:
        st.markdown(f"**Class profile** (the SE paper's analysis) over {prof.images} Imagenette val images: each "
                    "class's mean gate per channel minus the mean over the classes, this image in black. Gates that "
                    "did not depend on the class would lie flat at 0; the paper found them more class-specific "
                    "the deeper the block.")
        block = st.selectbox("Block", list(prof.means), index=len(prof.means) - 1, format_func=figures.short_name,
                             key=wkey(VIEW, "profile-block", shown))
        left, right = wrapping_columns(2, wkey(VIEW, "profile", shown), "18rem")
        with left:
            chart(figures.profile_curves(prof, block, a.se.get(block)), key=wkey(VIEW, "profile-curves", shown))
        with right:
            chart(figures.specificity_by_depth(prof, block), key=wkey(VIEW, "specificity", shown))
    st.markdown("**One block's gates**")
    c1, c2 = st.columns([3, 1])
    path = c1.selectbox("Block", list(a.se), index=len(a.se) - 1, format_func=figures.short_name,
                        key=wkey(VIEW, "bars-block", shown))
    sort = c2.toggle("Sort by gate", key=wkey(VIEW, "sort"))
    clickable_chart(figures.gate_bars(a.se[path], f"{figures.short_name(path)}: {len(a.se[path])} channels", sort=sort),
                    wkey(VIEW, "bars", shown), VIEW, shown, path)
    st.caption("Click a bar, or a cell of the overview, to see that channel in the drill-down above.")
