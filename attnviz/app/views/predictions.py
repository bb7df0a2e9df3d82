"""Predictions: each model's top-5 for the image, side by side, as plain HTML bars."""

from __future__ import annotations

import streamlit as st

from ... import figures
from ..page import Page
from ..widgets import wrapping_columns


def render(page: Page) -> None:
    cols = wrapping_columns(len(page.shown), "predictions")
    for col, shown in zip(cols, page.shown):
        a = shown.analysis
        with col:
            acc = a.meta.metrics.get("val_top1") if a.meta else None
            st.markdown(f"**{shown.label}**" + (f"  \nImagenette val top-1 {acc:.1%}" if acc else ""))
            st.html(figures.top_k_html(a.top_k(5)))
            if shown.handle.is_timm:
                st.caption(shown.handle.attention_line())
    st.caption("attnviz's own models know ten Imagenette classes (timm's ImageNet models 1,000); an image of "
               "anything else still gets a probability for each.")
