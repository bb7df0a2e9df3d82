"""attnviz: the Streamlit page. Widgets and layout only; everything else is in the package."""

from __future__ import annotations

from collections.abc import Callable
from functools import partial

import streamlit as st

from attnviz import figures, limits
from attnviz.analysis import Analysis
from attnviz.app import explorer, ui
from attnviz.app.click_image import click_image, last_click
from attnviz.app.live_figure import live_figure
from attnviz.app.service import ModelRegistry, ResultCache, image_key, sample_images, shared
from attnviz.cam import grad_cam
from attnviz.export import json_bytes, npz_bytes
from attnviz.features import BlockFeatures, block_features
from attnviz.image import ImageError
from attnviz.intervene import DEFAULT_K, InterventionResult, intervene
from attnviz.weights import WeightsError

PNG_CONFIG = {"displaylogo": False, "toImageButtonOptions": {"format": "png", "scale": 2}}


def registry() -> ModelRegistry:
    return shared()[0]  # one per process, warmed up at server start (serve.py)


def results() -> ResultCache:
    return shared()[1]


def chart(fig, key: str | None = None) -> None:
    st.plotly_chart(fig, config=PNG_CONFIG, key=key)


def clickable_chart(fig, key: str, prefix: str, block: str | None = None) -> None:
    """A chart whose click on a channel (a bar of ``block``, or a cell of a clickable
    overview) opens that channel in the drill-down of the view ``prefix``."""
    st.plotly_chart(fig, config=PNG_CONFIG, key=key, selection_mode="points",
                    on_select=partial(_pick_channel, key, prefix, block))


def _pick_channel(key: str, prefix: str, block: str | None) -> None:
    picked = ui.picked_channel(st.session_state[key]["selection"]["points"], block)
    if picked is not None:
        st.session_state[f"{prefix}-drill-block"], st.session_state[f"{prefix}-drill-channel"] = picked


def one_line(exc: BaseException) -> str:
    return str(exc.args[0]) if isinstance(exc, KeyError) and exc.args else str(exc)


def pick_image() -> tuple[bytes, str] | None:
    st.sidebar.header("Image")
    source = st.sidebar.radio("Source", ["Sample", "Upload"], horizontal=True, key="source")
    if source == "Upload":
        up = st.sidebar.file_uploader(
            f"JPEG, PNG, WebP, BMP, GIF or TIFF, up to {limits.MAX_UPLOAD_MB} MB",
            type=ui.UPLOAD_TYPES, max_upload_size=limits.MAX_UPLOAD_MB, key="upload")
        return (up.getvalue(), up.name) if up is not None else None
    samples = sample_images()
    name = st.sidebar.selectbox("Sample", list(samples), key="sample")
    st.sidebar.caption("Bundled samples are CC0, public domain or CC BY; see attnviz/samples/LICENSES.md.")
    return samples[name].read_bytes(), f"sample: {name}"


def keep_loaded(loaded: list[str], load: Callable[[], str], refused: str, said: Callable[[str], str]) -> None:
    """Run ``load`` (a registry load returning the model's name): one line when the weights
    are refused, else the name joins this session's ``loaded`` and ``said(name)`` is shown."""
    try:
        name = load()
    except WeightsError as exc:
        st.error(f"{refused}: {exc}")
        return
    if name not in loaded:
        loaded.append(name)
    st.success(said(name))


def own_weights() -> list[str]:
    """The sidebar's upload of a user's own weights pair; returns this session's uploads."""
    uploaded = st.session_state.setdefault("uploaded_models", [])
    with st.sidebar.expander("Your own weights"):
        st.caption("A .safetensors file and its .json metadata, as `attnviz train` writes them. "
                   "Checked against the metadata (sha256, architecture, tensor names and shapes); "
                   "nothing is unpickled.")
        w = st.file_uploader("Weights (.safetensors)", type=["safetensors"], key="own-weights",
                             max_upload_size=limits.MAX_UPLOAD_MB)
        m = st.file_uploader("Metadata (.json)", type=["json"], key="own-meta", max_upload_size=limits.MAX_UPLOAD_MB)
        if w is not None and m is not None and st.button("Load these weights", key="own-load"):
            keep_loaded(uploaded, lambda: registry().add_upload(w.getvalue(), m.getvalue()),
                        "These weights can't be used", lambda name: f"Loaded {name}.")
    return [n for n in uploaded if registry().has(n)]


def own_timm_model() -> list[str]:
    """The sidebar's "Your own model": a timm architecture with an uploaded checkpoint (or
    random weights); returns this session's timm models."""
    from attnviz.timm_adapter import SUPPORTED

    loaded = st.session_state.setdefault("timm_models", [])
    with st.sidebar.expander("Your own model (timm)"):
        st.caption(ui.TIMM_HELP)
        arch = st.selectbox("Architecture", list(SUPPORTED), key="timm-arch",
                            format_func=lambda n: f"{n}: {SUPPORTED[n].shows}")
        ckpt = st.file_uploader("Checkpoint", type=["safetensors", "pth", "pt", "bin"], key="timm-ckpt",
                                max_upload_size=limits.MAX_CHECKPOINT_MB)
        random_weights = st.checkbox("Random weights (no checkpoint)", key="timm-random")
        if (ckpt is not None or random_weights) and st.button("Load this model", key="timm-load"):
            checkpoint, filename = (None, "") if random_weights else (ckpt.getvalue(), ckpt.name)
            with st.spinner(f"Loading {arch}..."):
                keep_loaded(loaded, lambda: registry().add_timm(f"timm:{arch}", checkpoint, filename),
                            "This model can't be used",
                            lambda name: f"Loaded {name}. {registry().attention_line(name)}")
    return [n for n in loaded if registry().has(n)]


def analyse_all(data: bytes, names: list[str]) -> dict[str, Analysis] | None:
    out = {}
    for name in names:
        try:
            out[name] = results().get(data, name, registry())
        except ImageError as exc:
            st.error(f"This file can't be used: {exc}.")
            return None
        except WeightsError as exc:
            st.warning(f"Model {name} skipped: {exc}")
    return out


def pick_model(analyses: dict[str, Analysis], kind: str | tuple[str, ...], key: str) -> Analysis | None:
    kinds = (kind,) if isinstance(kind, str) else kind
    # in the order of ``kinds``: the Compare view opens on full self-attention where there is one
    names = list(dict.fromkeys(n for k in kinds for n, a in analyses.items() if ui.shows(a, k)))
    if not names:
        st.info(f"No model with {' or '.join(kinds)} attention is loaded.")
        return None
    name = names[0] if len(names) == 1 else st.selectbox("Model", names, key=key)
    return analyses[name]


def view_predictions(analyses: dict[str, Analysis]) -> None:
    cols = st.columns(len(analyses))
    for col, (name, a) in zip(cols, analyses.items()):
        with col:
            acc = a.meta.metrics.get("val_top1") if a.meta else None
            st.markdown(f"**{name}**" + (f"  \nImagenette val top-1 {acc:.1%}" if acc else ""))
            st.html(figures.top_k_html(a.top_k(5)))
            if a.meta and a.meta.arch.startswith("timm:"):
                st.caption(registry().attention_line(name))
    st.caption("attnviz's own models know ten Imagenette classes (timm's ImageNet models 1,000); an image of "
               "anything else still gets a probability for each.")


def view_se(analyses: dict[str, Analysis], data: bytes, img_key: str) -> None:
    a = pick_model(analyses, "se", "se-model")
    if a is None:
        return
    st.caption(ui.EXPLAIN["se"])
    clickable_chart(figures.gates_heatmap(a.se, "SE gates of every block (rows) and channel (columns): click one",
                                          clickable=True), "se-overview", "se")
    drill_down(a, a.se, data, img_key, "se", overlay_controls("se"))
    intervention_panel(a, "se", data, img_key, list(a.se))
    prof = registry().profile(a.model_name)
    if prof is not None:
        st.markdown(f"**Class profile** (the SE paper's analysis): mean gate per channel for each class over "
                    f"{prof.images} Imagenette val images, with this image in black.")
        block = st.selectbox("Block", list(prof.means), index=len(prof.means) - 1, format_func=figures.short_name,
                             key="se-profile-block")
        chart(figures.profile_curves(prof, block, a.se.get(block)), key="se-profile")
    sort = st.toggle("Sort channels by gate", key="se-sort")
    cols = st.columns(2)
    for i, (path, g) in enumerate(a.se.items()):
        with cols[i % 2]:
            clickable_chart(figures.gate_bars(g, f"{figures.short_name(path)}: {len(g)} channels", sort=sort),
                            f"se-{path}", "se", path)
    st.caption("Click a bar to see that channel in the drill-down above.")


def overlay_controls(prefix: str) -> tuple[float, str]:
    c1, c2 = st.columns(2)
    opacity = c1.slider("Overlay opacity", 0.0, 1.0, 0.55, 0.05, key=f"{prefix}-opacity")
    cmap = c2.selectbox("Colour map", figures.COLORSCALES, key=f"{prefix}-cmap")
    return opacity, cmap


def view_cbam(analyses: dict[str, Analysis], data: bytes, img_key: str) -> None:
    a = pick_model(analyses, "cbam", "cbam-model")
    if a is None:
        return
    st.caption(ui.EXPLAIN["cbam"])
    opacity, cmap = overlay_controls("cbam")
    cols = st.columns(2)
    bg = figures.image_uri(a.display)
    for i, (path, m) in enumerate(a.cbam_spatial.items()):
        with cols[i % 2]:
            chart(figures.overlay(a.display, m, f"{figures.short_name(path)} ({m.shape[0]}×{m.shape[1]})",
                                  opacity=opacity, colorscale=cmap, background=bg, extent=a.image_size,
                                  width_px=ui.MAP_WIDTH["cbam"]), key=f"cbam-s-{path}")
    with cols[len(a.cbam_spatial) % 2]:
        cam_chart(a, img_key, "cbam", ui.MAP_WIDTH["cbam"], (opacity, cmap))
    st.caption(ui.EXPLAIN["grad_cam_beside"])
    clickable_chart(figures.gates_heatmap(a.cbam_channel, "CBAM channel gates of every block: click one",
                                          clickable=True), "cbam-overview", "cbam")
    path = st.selectbox("Channel gates of block", list(a.cbam_channel), format_func=figures.short_name,
                        key="cbam-block")
    clickable_chart(figures.gate_bars(a.cbam_channel[path], figures.short_name(path),
                                      sort=st.toggle("Sort", key="cbam-sort")), "cbam-bars", "cbam", path)
    drill_down(a, a.cbam_channel, data, img_key, "cbam", (opacity, cmap))
    intervention_panel(a, "cbam", data, img_key, list(a.cbam_channel))


def memo(name: str, key: tuple, compute):
    """``compute()``, kept in this session for the last ``key`` only: a rerun with the
    same settings (a colour map changed) does not run the model again, and nothing is
    shared with other sessions or with the cached analyses."""
    kept = st.session_state.setdefault(name, {})
    if key not in kept:
        value = compute()
        kept.clear()
        kept[key] = value
    return kept[key]


@st.fragment  # its own widgets rerun only this panel
def drill_down(a: Analysis, gates: dict, data: bytes, img_key: str, prefix: str, look: tuple[float, str]) -> None:
    """One channel of one block: its feature map before and after the gates, its gate
    and rank; the block's most and least gated channels as thumbnails."""
    st.subheader("Channel drill-down")
    paths = list(gates)
    bkey, ckey = f"{prefix}-drill-block", f"{prefix}-drill-channel"
    if st.session_state.get(bkey) not in paths:
        st.session_state[bkey] = paths[-1]
    c1, c2 = st.columns([3, 1])
    path = c1.selectbox("Block (or click a channel in a chart)", paths, format_func=figures.short_name, key=bkey)
    n = len(gates[path])
    st.session_state[ckey] = min(int(st.session_state.get(ckey, 0)), n - 1)
    c = int(c2.number_input(f"Channel (0..{n - 1})", min_value=0, max_value=n - 1, step=1, key=ckey))
    try:
        f: BlockFeatures = memo(f"{prefix}-drill-memo", (img_key, a.model_name, path),
                                lambda: block_features(data, registry().get(a.model_name), path))
    except (KeyError, ValueError, ImageError, WeightsError) as exc:
        st.error(f"No feature maps for this block: {one_line(exc)}")
        return
    opacity, cmap = look
    block = figures.short_name(path)
    st.markdown(ui.channel_line(block, c, float(f.gates[c]), f.rank(c), n))
    maps = {"before the gate": f.before[c], f"after the channel gate (× {float(f.gates[c]):.3f})": f.after_channel[c]}
    if f.spatial is not None:
        maps["after the spatial gate too"] = f.after[c]
    chart(figures.channel_maps(a.display, maps, f"{block} channel {c}", opacity=opacity, colorscale=cmap,
                               extent=a.image_size), key=f"{prefix}-drill-maps")
    top, bottom = f.extremes(min(8, n // 2))
    chart(figures.channel_thumbnails(
        a.display, f.before[top + bottom], [f"ch {i}: {float(f.gates[i]):.2f}" for i in top + bottom],
        f"{block}: the {len(top)} largest gates (top row) and the {len(bottom)} smallest (bottom row), "
        "maps before the gate", opacity=opacity, colorscale=cmap, extent=a.image_size), key=f"{prefix}-drill-thumbs")


@st.fragment  # its own widgets rerun only this panel
def intervention_panel(a: Analysis, view: str, data: bytes, img_key: str, layers: list[str]) -> None:
    """Change one kind of attention (``attnviz.intervene``) and show the top-5 before -> after."""
    st.subheader("Intervene: does this attention matter for this prediction?")
    profile = registry().profile(a.model_name)
    kinds = ui.interventions_for(view, profile is not None)
    c1, c2, c3, c4 = st.columns([4, 2, 1, 2])
    what = c1.selectbox("Change", kinds, format_func=ui.INTERVENTION_LABELS.get, key=f"{view}-iv-what")
    scopes = [ui.WHOLE_MODEL, *dict.fromkeys(figures.short_name(p) for p in layers)]
    where = c2.selectbox("Where", scopes, key=f"{view}-iv-where")
    k = int(c3.number_input("k", min_value=1, value=DEFAULT_K, step=1, key=f"{view}-iv-k",
                            disabled=what != "knockout-top"))
    follow = c4.selectbox("Follow class", ["top-1 before", *a.classes], key=f"{view}-iv-target")
    layer = None if where == ui.WHOLE_MODEL else where
    k = k if what == "knockout-top" else None
    target = None if follow == "top-1 before" else follow
    try:
        r: InterventionResult = memo(f"{view}-iv-memo", (img_key, a.model_name, what, layer, k, target),
                                     lambda: intervene(data, registry().get(a.model_name), what, layer, k=k,
                                                       target=target, profile=profile))
    except (KeyError, ValueError, ImageError, WeightsError) as exc:
        st.error(f"This intervention can't run: {one_line(exc)}")
        return
    st.markdown(ui.intervention_summary(r))
    chart(figures.before_after_bars(r.classes, r.before, r.after, target=r.target,
                                    title="top-5 before (grey) → after (blue)"), key=f"{view}-iv-bars")


@st.fragment
def view_self_attention(analyses: dict[str, Analysis], img_key: str, data: bytes) -> None:
    a = pick_model(analyses, "self_attn", "sa-model")
    if a is None:
        return
    st.caption(ui.EXPLAIN["self_attn"])
    how = st.radio("Query by", ui.QUERY_MODES, horizontal=True, key="sa-how")
    if how == ui.QUERY_MODES[0]:
        look = hover_explorer(a, f"{img_key}-{a.model_name}")
    else:
        look = click_panel(a, img_key)
    left, right = st.columns([2, 3])
    with left:
        cam_chart(a, img_key, "sa", ui.MAP_WIDTH["cbam"], look)
    right.caption(ui.EXPLAIN["grad_cam_beside"])
    intervention_panel(a, "self_attn", data, img_key, list(a.self_attn))


def hover_explorer(a: Analysis, ident: str) -> tuple[float, str]:
    """The self-attention map follows the pointer in the browser (attnviz.app.explorer);
    the pinned pixels live in the URL. Returns the opacity and colour map chosen."""
    opacity, cmap = overlay_controls("sa")
    st.caption(ui.QUALITY_HELP)
    for layer in a.self_attn:
        for line in ui.uniform_warnings(figures.short_name(layer), a.quality[layer]):
            st.warning(line)
    payloads = st.session_state.setdefault("explorer-payloads", {})
    wanted = (ident, cmap, opacity)
    if wanted not in payloads:
        payloads.clear()  # one image's attention at a time per session
        pins = explorer.parse_pins(st.query_params.get("pins"), a.image_size)
        payloads[wanted] = explorer.payload(a, cmap, opacity, pins, ident=ident)
    pins = explorer.attention_explorer(payloads[wanted], key=f"explorer-{ident}")
    st.caption(ui.EXPLORER_FALLBACK)
    if pins is not None and explorer.format_pins(pins) != st.query_params.get("pins", ""):
        if pins:
            st.query_params["pins"] = explorer.format_pins(pins)
        else:
            del st.query_params["pins"]
    return opacity, cmap


def clicked_query(a: Analysis, img_key: str, prefix: str) -> tuple[str, tuple[int, int]]:
    """The click component's key and the query pixel (x, y) of the original image: the last
    click's, kept per image and model, or the centre before any click."""
    click_key = f"{prefix}click-{img_key}-{a.model_name}"
    query_key = f"{prefix}query-{img_key}-{a.model_name}"
    click = last_click(click_key)
    if click and st.session_state.get(f"{click_key}-seen") != click:
        st.session_state[f"{click_key}-seen"] = click
        st.session_state[query_key] = ui.to_image_xy(click, a.image_size)
    return click_key, st.session_state.get(query_key, ui.centre(a.image_size))


def click_panel(a: Analysis, img_key: str) -> tuple[float, str]:
    """Query by clicking: every click is a rerun that redraws each layer's panel on the server.
    Returns the opacity and colour map chosen."""
    st.caption("Click the image to choose the query pixel.")
    click_key, q = clicked_query(a, img_key, "")
    left, right = st.columns([3, 5])
    with left:
        shown = ui.marked_image(a.display, q, extent=a.image_size)
        click_image(shown, key=click_key)
        opacity, cmap = overlay_controls("sa")
    with right:
        st.caption(ui.QUALITY_HELP)
        for layer in a.self_attn:
            h, w = a.self_attn_grid[layer]
            row, col = a.cell(layer, *q)
            quality = a.quality[layer]
            st.markdown(f"**{figures.short_name(layer)}**: query pixel ({q[0]:.0f}, {q[1]:.0f}) of "
                        f"{a.image_size[0]}×{a.image_size[1]} → cell (row {row}, col {col}) of {h}×{w}")
            for line in ui.uniform_warnings(figures.short_name(layer), quality):
                st.warning(line)
            live_figure(figures.query_panel(a.display, a.query(layer, *q), q, layer, opacity=opacity,
                                            colorscale=cmap, extent=a.image_size, quality=quality,
                                            width_px=ui.MAP_WIDTH["self_attn"]),
                        key=f"sa-{layer}", config=PNG_CONFIG)
    return opacity, cmap


def view_context(analyses: dict[str, Analysis]) -> None:
    a = pick_model(analyses, "context", "ctx-model")
    if a is None:
        return
    st.caption(ui.EXPLAIN["context"])
    cols = st.columns(2)
    for i, (path, maps) in enumerate(a.context.items()):
        with cols[i % 2]:
            k = st.slider("Key", 0, len(maps) - 1, 0, key=f"ctx-{path}") if len(maps) > 1 else 0
            chart(figures.context_overlay(a.display, maps[k], f"{path} ({maps.shape[1]}×{maps.shape[2]})",
                                          extent=a.image_size, width_px=ui.MAP_WIDTH["cbam"]), key=f"ctx-map-{path}")


@st.fragment
def view_axial(analyses: dict[str, Analysis], img_key: str) -> None:
    """Click a pixel: each axial layer's height step along its column, width step along its
    row, and the composed map of both over the whole image, per head or their mean."""
    a = pick_model(analyses, "axial", "ax-model")
    if a is None:
        st.caption("Train one with `attnviz train --arch axial_resnet18` and load it under "
                   "\"Your own weights\" in the sidebar.")
        return
    st.caption(ui.EXPLAIN["axial"])
    st.caption("Click the image to choose the query pixel.")
    click_key, q = clicked_query(a, img_key, "ax")
    left, right = st.columns([2, 7])
    with left:
        click_image(ui.marked_image(a.display, q, extent=a.image_size), key=click_key)
    with right:
        for layer in a.self_attn:
            h, w = a.self_attn_grid[layer]
            row, col = a.cell(layer, *q)
            along_column, along_row = a.axial_query(layer, *q)
            st.markdown(f"**{figures.short_name(layer)}**: query pixel ({q[0]:.0f}, {q[1]:.0f}) → cell "
                        f"(row {row}, col {col}) of {h}×{w}")
            heads = along_column.shape[0]
            options = [f"mean of {heads} heads", *(f"head {i}" for i in range(heads))]
            head = options.index(st.radio("Heads", options, horizontal=True, key=f"ax-head-{layer}")) - 1
            figs = figures.axial_panels(a.display, along_column, along_row, a.query(layer, *q), q, (row, col), layer,
                                        head=None if head < 0 else head, extent=a.image_size,
                                        width_px=ui.MAP_WIDTH["axial"])
            for i, (column, fig) in enumerate(zip(st.columns(3), figs)):
                with column:
                    chart(fig, key=f"ax-{layer}-{i}")


def compare_layer(kind: str, layers: list[str]) -> str:
    return st.selectbox("Layer", layers, index=ui.default_layer(kind, layers), format_func=figures.short_name,
                        key=f"cmp-{kind}-layer")


@st.cache_data(max_entries=48, show_spinner=False)
def cam_for(img_key: str, name: str, _a: Analysis):
    """Grad-CAM of the analysed image's top class with model ``name`` (computed once per image and model)."""
    return grad_cam(_a.image, registry().get(name), int(_a.probs.argmax()), size=_a.size)


def cam_chart(a: Analysis, img_key: str, where: str, width_px: int, look: tuple[float, str] | None = None) -> None:
    """Grad-CAM of ``a``'s model and top class, drawn as its attention maps are (``look``:
    their opacity and colour map); ``where``: the place on the page (one model can be
    shown in two columns of the Compare view)."""
    try:
        r = cam_for(img_key, a.model_name, a)
    except (ImportError, WeightsError) as exc:
        st.info(f"No Grad-CAM: {exc}")
        return
    drawn = {} if look is None else {"opacity": look[0], "colorscale": look[1]}  # else the figures' defaults
    chart(figures.cam_overlay(a.display, r.map, f"Grad-CAM {r.layer}: {r.class_name}", extent=a.image_size,
                              width_px=width_px, **drawn), key=f"cam-{where}-{a.model_name}")


def view_compare(analyses: dict[str, Analysis], img_key: str) -> None:
    cols = st.columns(3)
    with cols[0]:
        st.subheader("SE: channels")
        st.caption(ui.EXPLAIN["se"])
        a = pick_model(analyses, "se", "cmp-se")
        if a:
            path = compare_layer("se", list(a.se))
            chart(figures.gate_bars(a.se[path], f"{figures.short_name(path)} gates", sort=True), key="cmp-se")
            cam_chart(a, img_key, "cmp-se", ui.MAP_WIDTH["compare"])
    with cols[1]:
        st.subheader("CBAM: channels + where")
        st.caption(ui.EXPLAIN["cbam"])
        a = pick_model(analyses, "cbam", "cmp-cbam")
        if a:
            path = compare_layer("cbam", list(a.cbam_spatial))
            chart(figures.overlay(a.display, a.cbam_spatial[path], f"{figures.short_name(path)} spatial gate",
                                  extent=a.image_size, width_px=ui.MAP_WIDTH["compare"]), key="cmp-cbam")
            cam_chart(a, img_key, "cmp-cbam", ui.MAP_WIDTH["compare"])
    with cols[2]:
        st.subheader("Self-attention: point to point")
        st.caption(ui.EXPLAIN["self_attn"])
        a = pick_model(analyses, ("self_attn", "axial"), "cmp-sa-model")  # an axial layer's composed map
        if a:
            layer = compare_layer("self_attn", list(a.self_attn))
            q = ui.centre(a.image_size)
            chart(figures.query_mean(a.display, a.query(layer, *q), q, layer, extent=a.image_size,
                                     width_px=ui.MAP_WIDTH["compare"]), key="cmp-sa")
            st.caption("Query: the image centre (choose another in the Self-attention view).")
            cam_chart(a, img_key, "cmp-sa", ui.MAP_WIDTH["compare"])
    st.caption(ui.EXPLAIN["grad_cam"])


def view_export(analyses: dict[str, Analysis], label: str) -> None:
    st.caption("Every chart has a camera button (top right, on hover) that downloads it as PNG. "
               "Here: the tensors of this image, as `attnviz explain` writes them.")
    stem = label.split(":")[-1].strip().rsplit(".", 1)[0].replace(" ", "_") or "image"
    for name, a in analyses.items():
        c1, c2, c3 = st.columns([2, 1, 1])
        c1.markdown(f"**{name}**")
        c2.download_button("NPZ", npz_bytes(a), f"{stem}.{name}.npz", "application/octet-stream", key=f"npz-{name}")
        c3.download_button("JSON", json_bytes(a, label), f"{stem}.{name}.json", "application/json",
                           key=f"json-{name}")


def main() -> None:
    st.set_page_config(page_title="attnviz", layout="wide")
    st.title("attnviz: see attention inside image classifiers")
    names = registry().names() + own_weights() + own_timm_model()
    if not names:
        st.error("No models found: put weights pairs in a folder and set ATTNVIZ_WEIGHTS_DIR.")
        return
    picked = pick_image()
    if picked is None:
        st.info("Upload an image, or pick a sample in the sidebar.")
        return
    data, label = picked
    analyses = analyse_all(data, names)
    if not analyses:
        return
    first = next(iter(analyses.values()))
    st.sidebar.image(first.display, caption=f"{label} ({first.image_size[0]}×{first.image_size[1]})")
    view = st.radio("View", ui.VIEWS, horizontal=True, key="view", label_visibility="collapsed")
    img_key = image_key(data)[:16]
    if view == "Predictions":
        view_predictions(analyses)
    elif view == "SE":
        view_se(analyses, data, img_key)
    elif view == "CBAM":
        view_cbam(analyses, data, img_key)
    elif view == "Self-attention":
        view_self_attention(analyses, img_key, data)
    elif view == "Context":
        view_context(analyses)
    elif view == "Axial":
        view_axial(analyses, img_key)
    elif view == "Compare":
        view_compare(analyses, img_key)
    else:
        view_export(analyses, label)


main()
