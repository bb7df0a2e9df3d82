"""A clickable image for the click-to-query views: a Streamlit custom component (v1,
two static files in ``click_frontend/``, no npm library) that shows a picture at its
column's width and returns the last click in displayed pixels.

It replaces streamlit-image-coordinates, whose script looks its ``<img>`` up as soon as
the frame's head is parsed: on a busy page the first render message can come before the
body exists, the render fails ("Cannot read properties of null") and the image never
shows (seen with 8 sessions at once). Here the script is deferred. A v1 frame, not a v2
inline component, so that it still works where the page's inline component scripts are
blocked (the hover explorer's fallback is this panel)."""

from __future__ import annotations

from functools import cache
from pathlib import Path

from PIL import Image

from ..figures import jpeg_uri

FRONTEND = Path(__file__).resolve().parent / "click_frontend"


@cache
def _component():
    import streamlit.components.v1 as components

    return components.declare_component("click_image", path=str(FRONTEND))


def last_click(key: str) -> dict | None:
    """The last click on the component ``key`` in this session ({x, y, width, height,
    unix_time}: displayed pixels and the displayed size), known before it is drawn again."""
    import streamlit as st

    return st.session_state.get(key)


def click_image(im: Image.Image, key: str) -> dict | None:
    """Show ``im``; returns the last click on it (as ``last_click``)."""
    return _component()(src=jpeg_uri(im, quality=90), key=key, default=None)
