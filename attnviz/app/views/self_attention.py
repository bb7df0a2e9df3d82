"""Self-attention: where the pixel under the pointer (or a clicked one) attends, per layer
and head; Grad-CAM beside it; Intervene."""

from __future__ import annotations

import streamlit as st

from ... import figures
from .. import explorer, ui
from ..click_image import click_image, last_click
from ..live_figure import live_figure
from ..page import Page, Shown
from ..widgets import PNG_CONFIG, cam_chart, intervention_panel, open_view, overlay_controls, wkey, wrapping_columns

VIEW = "self_attn"
PINNED_IMAGE = "pinned"  # the URL's key for the image (its hash) that the pins were set on


@st.fragment
def render(page: Page) -> None:
    shown = open_view(page, VIEW)
    if shown is None:
        return
    a = shown.analysis
    how = st.radio("Query by", ui.QUERY_MODES, horizontal=True, key=wkey(VIEW, "how"))
    look = hover_explorer(page, shown) if how == ui.QUERY_MODES[0] else click_panel(page, shown)
    left, right = st.columns([2, 3])
    with left:
        cam_chart(page, shown, VIEW, ui.MAP_WIDTH["cbam"], look)
    right.caption(ui.EXPLAIN["grad_cam_beside"])
    intervention_panel(page, shown, VIEW, list(a.self_attn))


def uniform_warnings(a) -> None:
    line = ui.uniform_warning({figures.short_name(layer): a.quality[layer] for layer in a.self_attn})
    if line:
        st.warning(line)


def hover_explorer(page: Page, shown: Shown) -> tuple[float, str]:
    """The self-attention map follows the pointer in the browser (attnviz.app.explorer);
    the pinned pixels live in the URL. Returns the opacity and colour map chosen."""
    a = shown.analysis
    opacity, cmap = overlay_controls(VIEW)
    st.caption(ui.QUALITY_HELP)
    uniform_warnings(a)
    ident = f"{page.img_key}-{shown.key}"
    payloads = st.session_state.setdefault("explorer-payloads", {})
    wanted = (ident, cmap, opacity)
    if wanted not in payloads:
        payloads.clear()  # one image's attention at a time per session
        # pins in the URL belong to the image they were set on (a shared link to the temple's
        # pins must not put them on the cat)
        on_this = st.query_params.get(PINNED_IMAGE) == page.img_key
        pins = explorer.parse_pins(st.query_params.get("pins") if on_this else None, a.image_size)
        payloads[wanted] = explorer.payload(a, cmap, opacity, pins, ident=ident)
    pins = explorer.attention_explorer(payloads[wanted], key=f"explorer-{ident}")
    st.caption(ui.EXPLORER_FALLBACK)
    if pins is not None and explorer.format_pins(pins) != st.query_params.get("pins", ""):
        if pins:
            st.query_params["pins"] = explorer.format_pins(pins)
            st.query_params[PINNED_IMAGE] = page.img_key
        else:
            del st.query_params["pins"]
            st.query_params.pop(PINNED_IMAGE, None)
    return opacity, cmap


def clicked_query(page: Page, shown: Shown, view: str) -> tuple[str, tuple[int, int]]:
    """The click component's key and the query pixel (x, y) of the original image: the last
    click's, kept per image and model, or the centre before any click."""
    a = shown.analysis
    click_key = wkey(view, f"click-{page.img_key}", shown)
    query_key = wkey(view, f"query-{page.img_key}", shown)
    click = last_click(click_key)
    if click and st.session_state.get(f"{click_key}-seen") != click:
        st.session_state[f"{click_key}-seen"] = click
        st.session_state[query_key] = ui.to_image_xy(click, a.image_size)
    return click_key, st.session_state.get(query_key, ui.centre(a.image_size))


def click_panel(page: Page, shown: Shown) -> tuple[float, str]:
    """Query by clicking: every click is a rerun that redraws each layer's panel on the server.
    Returns the opacity and colour map chosen."""
    a = shown.analysis
    st.caption("Click the image to choose the query pixel.")
    click_key, q = clicked_query(page, shown, VIEW)
    left, right = wrapping_columns(2, wkey(VIEW, "click-row"), "18rem")  # one above the other on a narrow page
    with left:
        click_image(ui.marked_image(a.display, q, extent=a.image_size), key=click_key)
    with right:
        opacity, cmap = overlay_controls(VIEW)
        c1, c2 = st.columns(2)
        scale = c1.selectbox("Colour scale", list(figures.ATTENTION_SCALES), format_func=figures.ATTENTION_SCALES.get,
                             key=wkey(VIEW, "scale"))
        mass = c2.slider("Colour the cells holding (% of the attention)", 10, 100, round(100 * figures.DEFAULT_MASS),
                         5, key=wkey(VIEW, "mass")) / 100
        st.caption(ui.QUALITY_HELP)
    for layer in a.self_attn:
        h, w = a.self_attn_grid[layer]
        row, col = a.cell(layer, *q)
        st.markdown(f"**{figures.short_name(layer)}**: query pixel ({q[0]:.0f}, {q[1]:.0f}) of "
                    f"{a.image_size[0]}×{a.image_size[1]} → cell (row {row}, col {col}) of {h}×{w}")
        live_figure(figures.query_panel(a.display, a.query(layer, *q), q, layer, opacity=opacity, colorscale=cmap,
                                        extent=a.image_size, quality=a.quality[layer],
                                        width_px=ui.MAP_WIDTH["self_attn"], zmax=float(a.self_attn[layer].max()),
                                        scale=scale, mass=mass),
                    key=wkey(VIEW, f"panel-{layer}", shown), config=PNG_CONFIG)
    uniform_warnings(a)
    return opacity, cmap
