"""The sidebar: the image (a sample or an upload) and the models (those found on disk,
ImageNet-trained ones from the hub, a user's own weights pair, a timm model), each as a
``ModelHandle``."""

from __future__ import annotations

from collections.abc import Callable

import streamlit as st

from .. import limits
from ..weights import WeightsError
from . import ui
from .service import ModelHandle, ModelRegistry, downloads_allowed, sample_images


def pick_image() -> tuple[bytes, str]:
    """The image bytes and a label for them: the upload, or the chosen sample (also while
    the uploader is still empty, so that the page never goes blank)."""
    st.sidebar.header("Image")
    source = st.sidebar.radio("Source", ["Sample", "Upload"], horizontal=True, key="source")
    samples = sample_images()
    name = st.session_state.get("sample", next(iter(samples)))
    if source == "Upload":
        up = st.sidebar.file_uploader(
            f"JPEG, PNG, WebP, BMP, GIF or TIFF, up to {limits.MAX_UPLOAD_MB} MB",
            type=ui.UPLOAD_TYPES, max_upload_size=limits.MAX_UPLOAD_MB, key="upload")
        if up is not None:
            return up.getvalue(), up.name
        st.sidebar.caption(f"Until you choose a file, the page shows the sample ({name}).")
    else:
        name = st.sidebar.selectbox("Sample", list(samples), key="sample")
        st.sidebar.caption("Bundled samples are CC0, public domain or CC BY; see attnviz/samples/LICENSES.md.")
    return samples[name].read_bytes(), f"sample: {name}"


def _keep_loaded(loaded: list[str], load: Callable[[], ModelHandle], refused: str,
                 said: Callable[[ModelHandle], str]) -> None:
    """Run ``load``: one line when the weights are refused, else the handle's key joins
    this session's ``loaded`` and ``said(handle)`` is shown."""
    try:
        handle = load()
    except WeightsError as exc:
        st.error(f"{refused}: {exc}")
        return
    if handle.key not in loaded:
        loaded.append(handle.key)
    st.success(said(handle))


def _still_kept(registry: ModelRegistry, keys: list[str]) -> list[ModelHandle]:
    return [h for h in map(registry.upload, keys) if h is not None]


def own_weights(registry: ModelRegistry) -> list[ModelHandle]:
    """The upload of a user's own weights pair; returns this session's uploads."""
    uploaded = st.session_state.setdefault("uploaded_models", [])
    with st.sidebar.expander("Your own weights"):
        st.caption("A .safetensors file and its .json metadata, as `attnviz train` writes them. "
                   "Checked against the metadata (sha256, architecture, tensor names and shapes); "
                   "nothing is unpickled.")
        w = st.file_uploader("Weights (.safetensors)", type=["safetensors"], key="own-weights",
                             max_upload_size=limits.MAX_UPLOAD_MB)
        m = st.file_uploader("Metadata (.json)", type=["json"], key="own-meta", max_upload_size=limits.MAX_UPLOAD_MB)
        if w is not None and m is not None and st.button("Load these weights", key="own-load"):
            _keep_loaded(uploaded, lambda: registry.add_upload(w.getvalue(), m.getvalue()),
                         "These weights can't be used", lambda h: f"Loaded {h.label}.")
    return _still_kept(registry, uploaded)


def own_timm_model(registry: ModelRegistry) -> list[ModelHandle]:
    """"Your own model": a timm architecture with an uploaded checkpoint (or random
    weights); returns this session's timm models."""
    from ..timm_adapter import SUPPORTED

    loaded = st.session_state.setdefault("timm_models", [])
    with st.sidebar.expander("Your own model (timm, or the authors' CBAM)"):
        st.caption(ui.TIMM_HELP)
        official = {"cbam:resnet50": "the CBAM authors' ResNet-50, CBAM gates of 16 blocks"}
        arch = st.selectbox("Architecture", [*SUPPORTED, *official], key="timm-arch",
                            format_func=lambda n: f"{n}: {official.get(n) or SUPPORTED[n].shows}")
        name = arch if arch in official else f"timm:{arch}"
        ckpt = st.file_uploader("Checkpoint", type=["safetensors", "pth", "pt", "bin"], key="timm-ckpt",
                                max_upload_size=limits.MAX_CHECKPOINT_MB)
        random_weights = st.checkbox("Random weights (no checkpoint)", key="timm-random")
        if (ckpt is not None or random_weights) and st.button("Load this model", key="timm-load"):
            checkpoint, filename = (None, "") if random_weights else (ckpt.getvalue(), ckpt.name)
            with st.spinner(f"Loading {arch}..."):
                _keep_loaded(loaded, lambda: registry.add_timm(name, checkpoint, filename),
                             "This model can't be used", lambda h: f"Loaded {h.label}. {h.attention_line()}")
    return _still_kept(registry, loaded)


def pretrained_models(registry: ModelRegistry) -> list[ModelHandle]:
    """"Pretrained on ImageNet": timm's ImageNet weights of the attention models people
    study, from the server's Hugging Face cache or, where the server allows downloads
    (``ATTNVIZ_ALLOW_DOWNLOADS``), downloaded with a progress bar; returns this session's."""
    from ..timm_adapter import PRETRAINED

    loaded = st.session_state.setdefault("pretrained_models", [])
    with st.sidebar.expander("Pretrained on ImageNet"):
        st.caption(ui.PRETRAINED_HELP)
        st.markdown(ui.pretrained_table(PRETRAINED.values()))
        allowed = downloads_allowed()
        if not allowed:
            st.caption(ui.DOWNLOADS_OFF)
        # Nothing is looked up (and neither timm nor huggingface_hub imported) before a model is chosen.
        name = st.selectbox("Model", list(PRETRAINED), index=None, placeholder="Choose a model",
                            key="pretrained-name")
        if name is not None:
            cached = registry.is_cached(name)
            size = f"~{PRETRAINED[name].params_m * 4:.0f} MB"
            label = "Load" if cached else f"Download ({size}) and load"
            if st.button(label, key="pretrained-load", disabled=not (cached or allowed)):
                bar = st.progress(0.0, text=f"Downloading {name}...") if not cached else None

                def progress(done: int, total: int | None) -> None:
                    if bar is not None and total:
                        bar.progress(min(done / total, 1.0), text=f"{name}: {done / 1e6:.0f} of {total / 1e6:.0f} MB")

                with st.spinner(f"Loading {name}..."):
                    _keep_loaded(loaded, lambda: registry.add_pretrained(name, download=allowed, progress=progress),
                                 "This model can't be loaded", lambda h: f"Loaded {h.label}. {h.attention_line()}")
                if bar is not None:
                    bar.empty()
    return [h for h in map(registry.pretrained, loaded) if h is not None]


def disk_models(registry: ModelRegistry) -> list[ModelHandle]:
    """Every model found on disk, loaded once per process; one line for each that can't be."""
    handles = []
    for name in registry.names():
        try:
            handles.append(registry.handle(name))
        except WeightsError as exc:
            st.warning(f"Model {name} skipped: {exc}")
    return handles
