"""Export: every captured tensor of the image, per model, as `attnviz explain` writes them."""

from __future__ import annotations

import streamlit as st

from ...export import json_bytes, npz_bytes
from ..page import Page
from ..widgets import wkey

VIEW = "export"


def render(page: Page) -> None:
    st.caption("Every chart has a camera button (top right, on hover) that downloads it as PNG. "
               "Here: the tensors of this image, as `attnviz explain` writes them.")
    stem = page.label.split(":")[-1].strip().rsplit(".", 1)[0].replace(" ", "_") or "image"
    for shown in page.shown:
        name = shown.label.split(" (")[0].replace(":", "_")
        c1, c2, c3 = st.columns([2, 1, 1])
        c1.markdown(f"**{shown.label}**")
        c2.download_button("NPZ", npz_bytes(shown.analysis), f"{stem}.{name}.npz", "application/octet-stream",
                           key=wkey(VIEW, "npz", shown))
        c3.download_button("JSON", json_bytes(shown.analysis, page.label), f"{stem}.{name}.json",
                           "application/json", key=wkey(VIEW, "json", shown))
