"""Context attention (timm's GCNet and LambdaNet): one map per block (per key for
LambdaNet), the same for every query."""

from __future__ import annotations

import streamlit as st

from ... import figures
from .. import ui
from ..page import Page
from ..widgets import chart, open_view, wkey

VIEW = "context"


def render(page: Page) -> None:
    shown = open_view(page, VIEW)
    if shown is None:
        return
    a = shown.analysis
    cols = st.columns(2)
    for i, (path, maps) in enumerate(a.context.items()):
        with cols[i % 2]:
            k = st.slider("Key", 0, len(maps) - 1, 0, key=wkey(VIEW, f"key-{path}", shown)) if len(maps) > 1 else 0
            chart(figures.context_overlay(a.display, maps[k], f"{path} ({maps.shape[1]}×{maps.shape[2]})",
                                          extent=a.image_size, width_px=ui.MAP_WIDTH["cbam"]),
                  key=wkey(VIEW, f"map-{path}", shown))
