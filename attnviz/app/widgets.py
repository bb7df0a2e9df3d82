"""Pieces that several views of the page share: charts, the model picker, the overlay
controls, Grad-CAM beside the attention, the channel drill-down and the Intervene panel.

Every widget key is made by ``wkey`` from the view, the widget and, for anything that
belongs to one model, that model's handle: two models of one kind on one page (two SE
models, a shipped pair and an upload under its name) never share a key."""

from __future__ import annotations

import re
from collections.abc import Callable
from functools import partial

import streamlit as st

from .. import figures
from ..cam import grad_cam
from ..features import BlockFeatures, block_features
from ..image import ImageError
from ..intervene import DEFAULT_K, InterventionResult, intervene
from ..kinds import kinds_of_view
from ..weights import WeightsError
from . import ui
from .page import Page, Shown

PNG_CONFIG = {"displaylogo": False, "toImageButtonOptions": {"format": "png", "scale": 2}}


def wkey(view: str, part: str, shown: Shown | None = None) -> str:
    """The widget key of ``part`` in ``view``, for one model (``shown``) or the view as a whole."""
    return f"{view}-{part}" if shown is None else f"{view}-{part}-{shown.key}"


def wrapping_columns(n: int, key: str, min_width: str = "14rem"):
    """``st.columns(n)`` that wrap onto more rows where the page is too narrow for ``n``
    columns of ``min_width`` (a phone, a narrow window with the sidebar open), instead of
    squeezing their maps and names. ``key`` may hold any characters (a layer's dots, a
    timm model's colon): the container's CSS class gets word characters and dashes only."""
    key = re.sub(r"[^\w-]", "_", key)
    box = st.container(key=key)
    box.html(f"<style>.st-key-{key} [data-testid='stHorizontalBlock'] {{flex-wrap: wrap;}}"
             f".st-key-{key} [data-testid='stColumn'] {{min-width: min(100%, {min_width});}}</style>")
    return box.columns(n)


def one_line(exc: BaseException) -> str:
    return str(exc.args[0]) if isinstance(exc, KeyError) and exc.args else str(exc)


def chart(fig, key: str | None = None) -> None:
    st.plotly_chart(fig, config=PNG_CONFIG, key=key)


def clickable_chart(fig, key: str, view: str, shown: Shown, block: str | None = None) -> None:
    """A chart whose click on a channel (a bar of ``block``, or a cell of a clickable
    overview) opens that channel in ``shown``'s drill-down of ``view``."""
    st.plotly_chart(fig, config=PNG_CONFIG, key=key, selection_mode="points",
                    on_select=partial(_pick_channel, key, view, shown, block))


def _pick_channel(key: str, view: str, shown: Shown, block: str | None) -> None:
    picked = ui.picked_channel(st.session_state[key]["selection"]["points"], block)
    if picked is not None:
        st.session_state[wkey(view, "drill-block", shown)], st.session_state[wkey(view, "drill-channel", shown)] = \
            picked


def pick_model(page: Page, view: str, kinds: tuple[str, ...] | None = None, *, part: str = "model") -> Shown | None:
    """The model a view (or one panel of it, ``part``) shows: the only one with its kinds,
    or the one the user picks; None, with one line saying so, where no model has them."""
    kinds = kinds_of_view(view) if kinds is None else kinds
    options = page.with_kinds(kinds)
    if not options:
        st.info(ui.missing_kind_line(kinds))
        if view in ui.HOW_TO_LOAD and part == "model":
            st.markdown(ui.HOW_TO_LOAD[view])
        return None
    if len(options) == 1:
        return options[0]
    by_key = {s.key: s for s in options}
    picked = st.selectbox("Model", list(by_key), format_func=lambda k: by_key[k].label, key=wkey(view, part))
    return by_key[picked]


def open_view(page: Page, view: str) -> Shown | None:
    """A one-model view's opening: its model (``pick_model``) and, when there is one, the
    line saying what the view shows (``ui.EXPLAIN[view]``)."""
    shown = pick_model(page, view)
    if shown is not None:
        st.caption(ui.EXPLAIN[view])
    return shown


def overlay_controls(view: str) -> tuple[float, str]:
    c1, c2 = st.columns(2)
    opacity = c1.slider("Overlay opacity", 0.0, 1.0, 0.55, 0.05, key=wkey(view, "opacity"))
    cmap = c2.selectbox("Colour map", figures.COLORSCALES, key=wkey(view, "cmap"))
    return opacity, cmap


def memo(name: str, key: tuple, compute: Callable):
    """``compute()``, kept in this session for the last ``key`` only: a rerun with the
    same settings (a colour map changed) does not run the model again, and nothing is
    shared with other sessions or with the cached analyses."""
    kept = st.session_state.setdefault(name, {})
    if key not in kept:
        value = compute()
        kept.clear()
        kept[key] = value
    return kept[key]


@st.cache_data(max_entries=48, show_spinner=False)
def _cam(img_key: str, handle_key: str, _shown: Shown):
    """Grad-CAM of the analysed image's top class with the model of ``handle_key``
    (computed once per image and model)."""
    a = _shown.analysis
    return grad_cam(a.image, _shown.handle.model, int(a.probs.argmax()), size=a.size)


def cam_chart(page: Page, shown: Shown, where: str, width_px: int, look: tuple[float, str] | None = None) -> None:
    """Grad-CAM of ``shown``'s model and top class, drawn as its attention maps are
    (``look``: their opacity and colour map); ``where``: its place on the page (one model
    can be shown in two columns of the Compare view). A model where Grad-CAM cannot run
    gets one line."""
    try:
        r = _cam(page.img_key, shown.key, shown)
    except (ImportError, WeightsError, ValueError, KeyError) as exc:
        st.info(f"No Grad-CAM: {one_line(exc)}")
        return
    a = shown.analysis
    drawn = {} if look is None else {"opacity": look[0], "colorscale": look[1]}  # else the figures' defaults
    chart(figures.cam_overlay(a.display, r.map, f"Grad-CAM {r.layer}: {r.class_name}", extent=a.image_size,
                              width_px=width_px, **drawn), key=wkey(where, "cam", shown))


@st.fragment  # its own widgets rerun only this panel
def drill_down(page: Page, shown: Shown, gates: dict, view: str, look: tuple[float, str]) -> None:
    """One channel of one block: its feature map before and after the gates, its gate
    and rank; the block's most and least gated channels as thumbnails."""
    st.subheader("Channel drill-down")
    a = shown.analysis
    paths = list(gates)
    bkey, ckey = wkey(view, "drill-block", shown), wkey(view, "drill-channel", shown)
    if st.session_state.get(bkey) not in paths:
        st.session_state[bkey] = paths[-1]
    c1, c2 = st.columns([3, 1])
    path = c1.selectbox("Block (or click a channel in a chart)", paths, format_func=figures.short_name, key=bkey)
    n = len(gates[path])
    st.session_state[ckey] = min(int(st.session_state.get(ckey, 0)), n - 1)
    c = int(c2.number_input(f"Channel (0..{n - 1})", min_value=0, max_value=n - 1, step=1, key=ckey))
    try:
        f: BlockFeatures = memo(wkey(view, "drill-memo"), (page.img_key, shown.key, path),
                                lambda: block_features(page.data, shown.handle.model, path))
    except (KeyError, ValueError, ImageError, WeightsError) as exc:
        st.error(f"No feature maps for this block: {one_line(exc)}")
        return
    opacity = look[0]  # feature maps are signed: drawn on a diverging scale, not the view's colour map
    block = figures.short_name(path)
    st.markdown(ui.channel_line(block, c, float(f.gates[c]), f.rank(c), n))
    maps = {"before the gate": f.before[c], f"× gate {float(f.gates[c]):.3f}": f.after_channel[c]}
    if f.spatial is not None:
        maps["× spatial gate too"] = f.after[c]
    chart(figures.channel_maps(a.display, maps, f"{block} channel {c}", opacity=opacity, extent=a.image_size),
          key=wkey(view, "drill-maps", shown))
    top, bottom = f.extremes(min(8, n // 2))
    chart(figures.channel_thumbnails(
        a.display, f.before[top + bottom], [f"ch {i}: {float(f.gates[i]):.2f}" for i in top + bottom],
        f"{block}: {len(top)} largest gates (top), {len(bottom)} smallest", opacity=opacity, extent=a.image_size),
        key=wkey(view, "drill-thumbs", shown))
    st.caption("The thumbnails are each channel's map before its gate.")


@st.fragment  # its own widgets rerun only this panel
def intervention_panel(page: Page, shown: Shown, view: str, layers: list[str]) -> None:
    """Change one kind of attention (``attnviz.intervene``) and show the top-5 before -> after."""
    st.subheader("Intervene: does this attention matter for this prediction?")
    a, profile = shown.analysis, shown.handle.profile
    kinds = ui.interventions_for(view, profile is not None)
    c1, c2, c3, c4 = st.columns([4, 2, 1, 2])
    what = c1.selectbox("Change", kinds, format_func=ui.INTERVENTION_LABELS.get, key=wkey(view, "iv-what", shown))
    scopes = [ui.WHOLE_MODEL, *dict.fromkeys(figures.short_name(p) for p in layers)]
    where = c2.selectbox("Where", scopes, key=wkey(view, "iv-where", shown))
    k = int(c3.number_input("k", min_value=1, value=DEFAULT_K, step=1, key=wkey(view, "iv-k", shown),
                            disabled=what != "knockout-top"))
    follow = c4.selectbox("Follow class", ["top-1 before", *a.classes], key=wkey(view, "iv-target", shown))
    layer = None if where == ui.WHOLE_MODEL else where
    k = k if what == "knockout-top" else None
    target = None if follow == "top-1 before" else follow
    try:
        r: InterventionResult = memo(wkey(view, "iv-memo"), (page.img_key, shown.key, what, layer, k, target),
                                     lambda: intervene(page.data, shown.handle.model, what, layer, k=k,
                                                       target=target, profile=profile))
    except (KeyError, ValueError, ImageError, WeightsError) as exc:
        st.error(f"This intervention can't run: {one_line(exc)}")
        return
    st.markdown(ui.intervention_summary(r))
    chart(figures.before_after_bars(r.classes, r.before, r.after, target=r.target,
                                    title="top-5 before (grey) → after (blue)"), key=wkey(view, "iv-bars", shown))
    st.caption(ui.OFF_CAVEAT)
    # every option on the whole model, side by side (a forward pass each: asked for, not run on every visit)
    if not st.toggle("How far does each option move the prediction?", key=wkey(view, "iv-all", shown)):
        return
    try:
        every = memo(wkey(view, "iv-every"), (page.img_key, shown.key, target),
                     lambda: [intervene(page.data, shown.handle.model, w, None, target=target, profile=profile,
                                        k=DEFAULT_K if w == "knockout-top" else None) for w in kinds])
    except (KeyError, ValueError, ImageError, WeightsError):
        return
    st.markdown("| on the whole model | followed class | points | top-1 after |\n|---|---|---|---|\n"
                + "\n".join(ui.effect_line(e) for e in every))
