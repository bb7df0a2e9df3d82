"""attnviz: the Streamlit page. A router: the sidebar gives the image and the models, each
model analyses the image once, and the chosen view (``attnviz.app.views``) draws it."""

from __future__ import annotations

import streamlit as st

from attnviz.app import sidebar
from attnviz.app.page import Page, Shown
from attnviz.app.service import image_key, shared
from attnviz.app.views import BY_TITLE, VIEWS
from attnviz.image import ImageError
from attnviz.weights import WeightsError


def analysed(data: bytes, handles) -> list[Shown] | None:
    """Each model with its analysis of ``data``; None (and one line) for an unusable image."""
    results = shared()[1]
    out = []
    for handle in handles:
        try:
            out.append(Shown(handle, results.get(data, handle)))
        except ImageError as exc:
            st.error(f"This file can't be used: {exc}.")
            return None
        except (WeightsError, ValueError) as exc:
            st.warning(f"Model {handle.label} skipped: {exc}")
    return out


def main() -> None:
    st.set_page_config(page_title="attnviz", layout="wide")
    st.title("attnviz")
    st.caption("See attention inside image classifiers: what SE and CBAM gates do, where self-attention looks.")
    registry = shared()[0]  # one per process, warmed up at server start (serve.py)
    handles = (sidebar.disk_models(registry) + sidebar.pretrained_models(registry) + sidebar.own_weights(registry)
               + sidebar.own_timm_model(registry))
    if not handles:
        st.error("No models found: put weights pairs in a folder and set ATTNVIZ_WEIGHTS_DIR.")
        return
    # drawn before anything can stop the page, so that the chosen view outlives a bad upload
    title = st.radio("View", [v.title for v in VIEWS], horizontal=True, key="view", label_visibility="collapsed")
    data, label = sidebar.pick_image()
    shown = analysed(data, handles)
    if not shown:
        return
    first = shown[0].analysis
    st.sidebar.image(first.display, caption=f"{label} ({first.image_size[0]}×{first.image_size[1]})")
    BY_TITLE[title].render(Page(data, label, image_key(data)[:16], tuple(shown)))


main()
