"""``attnviz explain`` for one image: the NPZ, the JSON and the PNG figures."""

from __future__ import annotations

import threading
from pathlib import Path

import plotly.graph_objects as go
from torch import nn

from . import figures
from .analysis import Analysis, analyze
from .export import json_bytes, npz_bytes, write_atomic
from .kinds import KINDS, Kind


def figures_for(a: Analysis, query: tuple[float, float] | None = None, cam=None) -> dict[str, go.Figure]:
    """Every figure of one analysis, by a file-name-safe label; ``cam``: a ``cam.CAMResult``
    of the same image and model, drawn beside the attention maps."""
    figs = {"top5": figures.top_k_bars(a.top_k(5), f"{a.model_name}: top-5")}
    if cam is not None:
        figs[f"gradcam_{cam.layer}"] = figures.cam_overlay(
            a.display, cam.map, f"Grad-CAM {cam.layer}: {cam.class_name} ({cam.probability:.1%})",
            extent=a.image_size)
    width, height = a.image_size
    q = query if query is not None else ((width - 1) / 2, (height - 1) / 2)
    for kind in KINDS.values():
        for label, fig in _kind_figures(a, kind, q).items():
            figs[f"{kind.name}_{label}"] = fig
    return figs


def _kind_figures(a: Analysis, kind: Kind, q: tuple[float, float]) -> dict[str, go.Figure]:
    """One kind's figures, drawn by its ``form`` (``kinds.KINDS``), by label."""
    kept, figs = a.maps[kind.name], {}
    if kind.form == "channels" and kept:  # every block's gates in one figure (a bar chart each would repeat it)
        figs["overview"] = figures.gates_heatmap(kept, f"{kind.label}, all blocks")
    for path, t in kept.items():
        name = figures.short_name(path)
        if kind.form == "map":
            figs[name] = figures.overlay(a.display, t, f"{kind.label} {name}", extent=a.image_size)
        elif kind.form == "maps":
            what = "map" if len(t) == 1 else f"mean of {len(t)} key maps"
            figs[name] = figures.context_overlay(a.display, t.mean(0), f"{name}: {kind.label} ({what})",
                                                 extent=a.image_size)
        elif kind.form == "matrix":
            figs[name] = figures.query_panel(a.display, a.query(path, *q), q, path, extent=a.image_size,
                                             quality=a.quality[path], zmax=float(t.max()),
                                             scale=next(iter(figures.ATTENTION_SCALES)), mass=figures.DEFAULT_MASS)
    return figs


_KALEIDO = threading.Lock()


def write_pngs(figs: dict[str, go.Figure], out: Path, stem: str, width: int = 720) -> list[Path]:
    """Render figures to ``<stem>_<label>.png`` (plotly + kaleido, which drives a
    local Chromium). Written atomically, one browser for the whole batch; one batch
    at a time, also when ``explain --workers`` analyses several images at once."""
    import plotly.io as pio

    paths = [out / f"{stem}_{label}.png" for label in figs]
    tmps = [p.with_name(f".{p.stem}.tmp.png") for p in paths]
    try:
        with _KALEIDO:
            pio.write_images(list(figs.values()), tmps, width=width, height=[f.layout.height for f in figs.values()],
                             scale=1)
    except Exception as exc:  # kaleido's errors (no browser, browser crashed) have no common base
        for tmp in tmps:
            tmp.unlink(missing_ok=True)
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        raise ValueError(f"PNG export failed ({type(exc).__name__}: {first}); it needs Chrome or Chromium: "
                         "install one, or pass --no-png") from None
    for tmp, p in zip(tmps, paths):
        tmp.replace(p)
    return paths


def explain_one(src: Path, model: nn.Module, out: Path, stem: str, *,
                query: tuple[float, float] | None = None, size: int | None = None, png: bool = True) -> list[Path]:
    """Analyse ``src`` and write ``<stem>.npz``, ``<stem>.json`` and (``png``) its figures
    into ``out``; returns the paths written."""
    a = analyze(src, model, size=size)
    if query is not None:
        width, height = a.image_size
        if not (0 <= query[0] < width and 0 <= query[1] < height):
            raise ValueError(f"--query {query[0]:g},{query[1]:g} is outside the {width}x{height} image")
    written = [out / f"{stem}.npz", out / f"{stem}.json"]
    write_atomic(written[0], npz_bytes(a))
    write_atomic(written[1], json_bytes(a, str(src)))
    if png:
        written += write_pngs(figures_for(a, query, _grad_cam(a, model)), out, stem)
    return written


def _grad_cam(a: Analysis, model: nn.Module):
    """Grad-CAM of ``a``'s image and top class (``attnviz.cam``), or None without the grad-cam package."""
    from .cam import check_available, grad_cam

    try:
        check_available()
    except ImportError:
        return None
    return grad_cam(a.image, model, int(a.probs.argmax()), size=a.size)
