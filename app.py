"""attnviz: the Streamlit page. Widgets and layout only; everything else is in the package."""

from __future__ import annotations

import streamlit as st
from streamlit_image_coordinates import streamlit_image_coordinates

from attnviz import figures, limits
from attnviz.analysis import Analysis
from attnviz.app import explorer, ui
from attnviz.app.live_figure import live_figure
from attnviz.app.service import ModelRegistry, ResultCache, image_key, sample_images, shared
from attnviz.cam import grad_cam
from attnviz.export import json_bytes, npz_bytes
from attnviz.image import ImageError
from attnviz.weights import WeightsError

PNG_CONFIG = {"displaylogo": False, "toImageButtonOptions": {"format": "png", "scale": 2}}


def registry() -> ModelRegistry:
    return shared()[0]  # one per process, warmed up at server start (serve.py)


def results() -> ResultCache:
    return shared()[1]


def chart(fig, key: str | None = None) -> None:
    st.plotly_chart(fig, config=PNG_CONFIG, key=key)


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
            try:
                name = registry().add_upload(w.getvalue(), m.getvalue())
            except WeightsError as exc:
                st.error(f"These weights can't be used: {exc}")
            else:
                if name not in uploaded:
                    uploaded.append(name)
                st.success(f"Loaded {name}.")
    return [n for n in uploaded if registry().has(n)]


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


def pick_model(analyses: dict[str, Analysis], kind: str, key: str) -> Analysis | None:
    names = [n for n, a in analyses.items() if a.meta and ui.has_kind(a.meta.arch, kind)]
    if not names:
        st.info(f"No model with {kind} attention is loaded.")
        return None
    name = names[0] if len(names) == 1 else st.selectbox("Model", names, key=key)
    return analyses[name]


def view_predictions(analyses: dict[str, Analysis]) -> None:
    cols = st.columns(len(analyses))
    for col, (name, a) in zip(cols, analyses.items()):
        with col:
            acc = a.meta.metrics.get("val_top1") if a.meta else None
            st.markdown(f"**{name}**" + (f"  \nImagenette val top-1 {acc:.1%}" if acc else ""))
            chart(figures.top_k_bars(a.top_k(5)), key=f"top5-{name}")
    st.caption("The models know ten Imagenette classes; an image of anything else still gets ten probabilities.")


def view_se(analyses: dict[str, Analysis]) -> None:
    a = pick_model(analyses, "se", "se-model")
    if a is None:
        return
    st.caption(ui.EXPLAIN["se"])
    chart(figures.gates_heatmap(a.se, "SE gates of every block (rows) and channel (columns)"), key="se-overview")
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
            chart(figures.gate_bars(g, f"{figures.short_name(path)}: {len(g)} channels", sort=sort), key=f"se-{path}")


def overlay_controls(prefix: str) -> tuple[float, str]:
    c1, c2 = st.columns(2)
    opacity = c1.slider("Overlay opacity", 0.0, 1.0, 0.55, 0.05, key=f"{prefix}-opacity")
    cmap = c2.selectbox("Colour map", figures.COLORSCALES, key=f"{prefix}-cmap")
    return opacity, cmap


def view_cbam(analyses: dict[str, Analysis]) -> None:
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
    chart(figures.gates_heatmap(a.cbam_channel, "CBAM channel gates of every block"), key="cbam-overview")
    path = st.selectbox("Channel gates of block", list(a.cbam_channel), format_func=figures.short_name,
                        key="cbam-block")
    chart(figures.gate_bars(a.cbam_channel[path], figures.short_name(path), sort=st.toggle("Sort", key="cbam-sort")),
          key="cbam-bars")


@st.fragment
def view_self_attention(analyses: dict[str, Analysis], img_key: str) -> None:
    a = pick_model(analyses, "self_attn", "sa-model")
    if a is None:
        return
    st.caption(ui.EXPLAIN["self_attn"])
    how = st.radio("Query by", ui.QUERY_MODES, horizontal=True, key="sa-how")
    if how == ui.QUERY_MODES[0]:
        hover_explorer(a, f"{img_key}-{a.model_name}")
    else:
        click_panel(a, img_key)


def hover_explorer(a: Analysis, ident: str) -> None:
    """The self-attention map follows the pointer in the browser (attnviz.app.explorer);
    the pinned pixels live in the URL."""
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


def click_panel(a: Analysis, img_key: str) -> None:
    """Query by clicking: every click is a rerun that redraws each layer's panel on the server."""
    st.caption("Click the image to choose the query pixel.")
    click_key = f"click-{img_key}-{a.model_name}"
    query_key = f"query-{img_key}-{a.model_name}"
    click = st.session_state.get(click_key)
    if click and st.session_state.get(f"{click_key}-seen") != click:
        st.session_state[f"{click_key}-seen"] = click
        st.session_state[query_key] = ui.to_image_xy(click, a.image_size)
    q = st.session_state.get(query_key, ui.centre(a.image_size))
    left, right = st.columns([3, 5])
    with left:
        shown = ui.marked_image(a.display, q, extent=a.image_size)
        streamlit_image_coordinates(shown, width="stretch", key=click_key, cursor="crosshair",
                                    image_format="JPEG", jpeg_quality=90)
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


def compare_layer(kind: str, layers: list[str]) -> str:
    return st.selectbox("Layer", layers, index=ui.default_layer(kind, layers), format_func=figures.short_name,
                        key=f"cmp-{kind}-layer")


@st.cache_data(max_entries=48, show_spinner=False)
def cam_for(img_key: str, name: str, _a: Analysis):
    """Grad-CAM of the analysed image's top class with model ``name`` (computed once per image and model)."""
    return grad_cam(_a.image, registry().get(name), int(_a.probs.argmax()), size=_a.size)


def cam_chart(analyses: dict[str, Analysis], a: Analysis, img_key: str) -> None:
    name = next(n for n, b in analyses.items() if b is a)
    try:
        r = cam_for(img_key, name, a)
    except (ImportError, WeightsError) as exc:
        st.info(f"No Grad-CAM: {exc}")
        return
    chart(figures.cam_overlay(a.display, r.map, f"Grad-CAM {r.layer}: {r.class_name}", extent=a.image_size,
                              width_px=ui.MAP_WIDTH["compare"]), key=f"cmp-cam-{name}")


def view_compare(analyses: dict[str, Analysis], img_key: str) -> None:
    cols = st.columns(3)
    with cols[0]:
        st.subheader("SE: channels")
        st.caption(ui.EXPLAIN["se"])
        a = pick_model(analyses, "se", "cmp-se")
        if a:
            path = compare_layer("se", list(a.se))
            chart(figures.gate_bars(a.se[path], f"{figures.short_name(path)} gates", sort=True), key="cmp-se")
            cam_chart(analyses, a, img_key)
    with cols[1]:
        st.subheader("CBAM: channels + where")
        st.caption(ui.EXPLAIN["cbam"])
        a = pick_model(analyses, "cbam", "cmp-cbam")
        if a:
            path = compare_layer("cbam", list(a.cbam_spatial))
            chart(figures.overlay(a.display, a.cbam_spatial[path], f"{figures.short_name(path)} spatial gate",
                                  extent=a.image_size, width_px=ui.MAP_WIDTH["compare"]), key="cmp-cbam")
            cam_chart(analyses, a, img_key)
    with cols[2]:
        st.subheader("Self-attention: point to point")
        st.caption(ui.EXPLAIN["self_attn"])
        a = pick_model(analyses, "self_attn", "cmp-sa")
        if a:
            layer = compare_layer("self_attn", list(a.self_attn))
            q = ui.centre(a.image_size)
            chart(figures.query_mean(a.display, a.query(layer, *q), q, layer, extent=a.image_size,
                                     width_px=ui.MAP_WIDTH["compare"]), key="cmp-sa")
            st.caption("Query: the image centre (choose another in the Self-attention view).")
            cam_chart(analyses, a, img_key)
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
    names = registry().names() + own_weights()
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
    if view == "Predictions":
        view_predictions(analyses)
    elif view == "SE":
        view_se(analyses)
    elif view == "CBAM":
        view_cbam(analyses)
    elif view == "Self-attention":
        view_self_attention(analyses, image_key(data)[:16])
    elif view == "Compare":
        view_compare(analyses, image_key(data))
    else:
        view_export(analyses, label)


main()
