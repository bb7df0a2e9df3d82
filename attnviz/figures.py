"""Figures: pure functions from tensors to ``plotly.graph_objects.Figure``.

Nothing here calls Streamlit, so every figure is tested without a browser and the
CLI writes the same figures the app shows. Gates are drawn on their absolute 0..1
scale; attention maps from 0 to their largest value, never min-max rescaled.
"""

from __future__ import annotations

import base64
import io
from collections.abc import Mapping, Sequence

import numpy as np
import plotly.graph_objects as go
import torch
from PIL import Image

from .image import DISPLAY_MAX_SIDE, display_image

GATE_AXIS = "gate value (absolute, 0..1)"
ATTN_AXIS = "attention weight (each query's row sums to 1)"


def short_name(path: str) -> str:
    """``layer3.1.cbam.spatial.gate`` -> ``layer3.1``: the block a tensor belongs to."""
    parts = path.split(".")
    return ".".join(parts[:2]) if len(parts) >= 2 and parts[0].startswith("layer") else path


def _as_numpy(t: torch.Tensor | np.ndarray) -> np.ndarray:
    return t.detach().cpu().numpy() if isinstance(t, torch.Tensor) else np.asarray(t)


def top_k_bars(top: Sequence[tuple[str, float]], title: str = "") -> go.Figure:
    """Horizontal bars of (class, probability), best on top."""
    names = [n for n, _ in top][::-1]
    probs = [p for _, p in top][::-1]
    fig = go.Figure(go.Bar(x=probs, y=names, orientation="h", text=[f"{p:.1%}" for p in probs],
                           textposition="auto", marker_color="#4c78a8"))
    fig.update_layout(title=title, height=60 + 28 * len(names), margin=dict(l=10, r=10, t=40 if title else 10, b=30))
    fig.update_xaxes(range=[0, 1], title="probability", tickformat=".0%")
    return fig


def gate_bars(gates: torch.Tensor | np.ndarray, title: str = "", sort: bool = False) -> go.Figure:
    """One bar per channel: the (C,) gates of one block on the absolute 0..1 scale.
    ``sort`` orders channels by gate value (the hover still names each channel)."""
    g = _as_numpy(gates).astype(float)
    channels = np.arange(len(g))
    if sort:
        order = np.argsort(-g, kind="stable")
        g, channels = g[order], channels[order]
    fig = go.Figure(go.Bar(
        x=np.arange(len(g)), y=g, customdata=channels, marker_color="#e45756",
        hovertemplate="channel %{customdata}<br>gate %{y:.3f}<extra></extra>",
    ))
    fig.update_layout(title=title, bargap=0.05, height=260, margin=dict(l=10, r=10, t=40 if title else 10, b=40))
    fig.update_yaxes(range=[0, 1], title=GATE_AXIS)
    fig.update_xaxes(title="channel, sorted by gate" if sort else "channel")
    return fig


def gates_heatmap(gates: Mapping[str, torch.Tensor], title: str = "") -> go.Figure:
    """All blocks at once: rows are blocks, columns channels, colour the gate in 0..1.
    Blocks have different widths; missing channels are left blank."""
    names = list(gates)
    width = max(len(g) for g in gates.values())
    z = np.full((len(names), width), np.nan)
    for i, n in enumerate(names):
        g = _as_numpy(gates[n])
        z[i, : len(g)] = g
    fig = go.Figure(go.Heatmap(
        z=z, y=[short_name(n) for n in names], x=np.arange(width), zmin=0, zmax=1, colorscale="Viridis",
        colorbar=dict(title=dict(text="gate (0..1)", side="right")),
        hovertemplate="%{y} channel %{x}<br>gate %{z:.3f}<extra></extra>",
    ))
    fig.update_layout(title=title, height=120 + 24 * len(names), margin=dict(l=10, r=10, t=40 if title else 10, b=40))
    fig.update_yaxes(autorange="reversed")
    fig.update_xaxes(title="channel")
    return fig


def image_uri(im: Image.Image, max_side: int = DISPLAY_MAX_SIDE) -> str:
    """The image as a JPEG data URI at display size: a few tens of kB in a figure,
    where a pixel array would be megabytes of JSON."""
    buf = io.BytesIO()
    display_image(im, max_side).save(buf, "JPEG", quality=85)
    return "data:image/jpeg;base64," + base64.b64encode(buf.getvalue()).decode()


HEAD_BACKGROUND_SIDE = 192
"""Long side of the photo under each head's small map: those subplots are ~120 px wide."""


def _overlay_parts(axis: int, extent: tuple[int, int], z: np.ndarray, *, background: str, opacity: float,
                   colorscale: str, zmax: float, colorbar: dict | None, query: tuple[float, float] | None,
                   domain: tuple[list[float], list[float]] | None = None) -> tuple[list[dict], dict, dict]:
    """One map over the image, on axes ``x<axis>``/``y<axis>``: (traces, layout image,
    layout axes), as plain dicts so that a figure is validated once, not per call.

    Drawn in the pixel coordinates of the original image of ``extent`` = (W, H): cell
    (r, c) covers x in [c W/w, (c+1) W/w) and y likewise, exactly how ``Analysis.cell``
    maps a pixel to a cell. ``background`` (a display copy of the image) is stretched
    over it."""
    h, w = z.shape
    width, height = extent
    n = "" if axis == 1 else str(axis)
    traces = [dict(
        type="heatmap", xaxis=f"x{n}", yaxis=f"y{n}", z=z, x0=width / w / 2, dx=width / w, y0=height / h / 2,
        dy=height / h, zmin=0, zmax=zmax, colorscale=colorscale, opacity=opacity, showscale=colorbar is not None,
        colorbar=colorbar, hovertemplate="x %{x:.0f}, y %{y:.0f}<br>value %{z:.4f}<extra></extra>",
    )]
    if query is not None:
        traces.append(dict(type="scatter", xaxis=f"x{n}", yaxis=f"y{n}", x=[query[0]], y=[query[1]], mode="markers",
                           hoverinfo="skip", showlegend=False,
                           marker=dict(symbol="x", size=12, color="white", line=dict(width=2, color="black"))))
    image = dict(source=background, xref=f"x{n}", yref=f"y{n}", x=0, y=0, sizex=width, sizey=height,
                 xanchor="left", yanchor="top", sizing="stretch", layer="below")
    xaxis = dict(visible=False, range=[0, width], constrain="domain")
    yaxis = dict(visible=False, range=[height, 0], scaleanchor=f"x{n}", constrain="domain", constraintoward="top")
    if domain is not None:
        xaxis["domain"], yaxis["domain"] = domain
    axes = {f"xaxis{n}": xaxis, f"yaxis{n}": yaxis}
    return traces, image, axes


def overlay(
    im: Image.Image,
    grid_map: torch.Tensor | np.ndarray,
    title: str = "",
    *,
    opacity: float = 0.55,
    colorscale: str = "Jet",
    zmax: float | None = 1.0,
    colorbar_title: str = GATE_AXIS,
    query: tuple[float, float] | None = None,
    show_colorbar: bool = True,
    background: str | None = None,
    extent: tuple[int, int] | None = None,
) -> go.Figure:
    """A (h, w) map drawn over the image it was computed from. ``zmax=None`` scales
    colours from 0 to the map's largest value. ``query`` marks a pixel.
    ``background``: the image's ``image_uri``, when the caller already has it.
    ``extent``: (width, height) of the original image, the coordinates of ``query``
    and of the axes, when ``im`` is a smaller copy of it (``Analysis.display``)."""
    z = _as_numpy(grid_map).astype(float)
    colorbar = dict(title=dict(text=colorbar_title, side="right"), thickness=14) if show_colorbar else None
    traces, image, axes = _overlay_parts(
        1, extent or im.size, z, background=background or image_uri(im), opacity=opacity, colorscale=colorscale,
        zmax=float(z.max()) if zmax is None else zmax, colorbar=colorbar, query=query)
    return go.Figure(data=traces, layout=dict(
        title=title, margin=dict(l=0, r=0, t=40 if title else 0, b=0), height=360, images=[image], **axes))


def query_panel(
    im: Image.Image,
    maps: torch.Tensor | np.ndarray,
    query: tuple[float, float],
    layer: str,
    *,
    opacity: float = 0.6,
    colorscale: str = "Jet",
    extent: tuple[int, int] | None = None,
) -> go.Figure:
    """For one query pixel and one self-attention layer, one figure: the mean over
    heads (large, left) and each head (small, right, in two rows), overlaid on the
    image. ``maps`` is (heads, h, w). One colour scale from 0 to the largest weight
    among them, so heads compare honestly; the colour bar says what the values are.
    ``extent`` as in ``overlay``.

    Built in one pass from plain dicts (no ``make_subplots``, no incremental updates):
    this figure is redrawn on every click, and plotly validates each call."""
    m = _as_numpy(maps).astype(float)
    heads = len(m)
    zmax = float(max(m.max(), m.mean(0).max()))
    extent = extent or im.size
    head_cols = (heads + 1) // 2
    gap = 0.02
    cell_w = (0.5 - gap * head_cols) / head_cols
    common = dict(opacity=opacity, colorscale=colorscale, zmax=zmax, query=query)
    colorbar = dict(title=dict(text=ATTN_AXIS, side="right"), thickness=14, len=1.0)
    parts = [_overlay_parts(1, extent, m.mean(0), background=image_uri(im), colorbar=colorbar,
                            domain=([0.0, 0.5 - gap], [0.0, 1.0]), **common)]
    small = image_uri(im, HEAD_BACKGROUND_SIDE)
    titles = [dict(text=f"mean of {heads} heads", x=(0.5 - gap) / 2, y=1.0)]
    for i in range(heads):
        row, col = divmod(i, head_cols)
        x0 = 0.5 + col * (cell_w + gap)
        y0 = 0.54 if row == 0 else 0.0
        parts.append(_overlay_parts(2 + i, extent, m[i], background=small, colorbar=None,
                                    domain=([x0, x0 + cell_w], [y0, y0 + 0.4]), **common))
        titles.append(dict(text=f"head {i}", x=x0 + cell_w / 2, y=y0 + 0.4))
    layout = dict(
        title=f"{short_name(layer)}: where the query attends", height=420, margin=dict(l=0, r=0, t=60, b=0),
        images=[image for _, image, _ in parts],
        annotations=[dict(t, xref="paper", yref="paper", showarrow=False, yanchor="bottom") for t in titles],
    )
    for _, _, axes in parts:
        layout.update(axes)
    return go.Figure(data=[t for traces, _, _ in parts for t in traces], layout=layout)


def query_mean(
    im: Image.Image,
    maps: torch.Tensor | np.ndarray,
    query: tuple[float, float],
    layer: str,
    *,
    extent: tuple[int, int] | None = None,
) -> go.Figure:
    """The compact form of ``query_panel``: only the mean over heads of the (heads, h, w)
    ``maps``, from 0 to its largest weight, the query marked."""
    mean = _as_numpy(maps).astype(float).mean(0)
    return overlay(im, mean, f"{short_name(layer)}: mean of {len(maps)} heads", zmax=None, colorbar_title=ATTN_AXIS,
                   query=query, extent=extent)


def profile_curves(profile, block: str, image_gates: torch.Tensor | np.ndarray | None = None) -> go.Figure:
    """The SE paper's figure for one block: mean gate per channel, one line per class,
    and, when given, this image's gates drawn over them in black."""
    fig = go.Figure()
    for name, row in zip(profile.classes, profile.means[block]):
        fig.add_trace(go.Scatter(y=row, mode="lines", name=name, line=dict(width=1)))
    if image_gates is not None:
        fig.add_trace(go.Scatter(y=_as_numpy(image_gates), mode="lines", name="this image",
                                 line=dict(width=2.5, color="black")))
    spec = profile.specificity[block]
    fig.update_layout(title=f"{short_name(block)}: class specificity {spec:.2f}", height=300,
                      margin=dict(l=10, r=10, t=40, b=40), legend=dict(font=dict(size=10)))
    fig.update_yaxes(range=[0, 1], title=GATE_AXIS)
    fig.update_xaxes(title="channel")
    return fig


def profile_grid(profile) -> go.Figure:
    """All blocks of a profile in one figure (for the CLI's PNG and the README)."""
    from plotly.subplots import make_subplots

    blocks = list(profile.means)
    cols = 2
    rows = (len(blocks) + cols - 1) // cols
    fig = make_subplots(rows=rows, cols=cols, subplot_titles=[
        f"{short_name(b)}: specificity {profile.specificity[b]:.2f}" for b in blocks], vertical_spacing=0.08)
    palette = ["#4c78a8", "#f58518", "#e45756", "#72b7b2", "#54a24b", "#eeca3b", "#b279a2", "#ff9da6",
               "#9d755d", "#bab0ac"]
    for i, b in enumerate(blocks):
        for k, (name, row) in enumerate(zip(profile.classes, profile.means[b])):
            fig.add_trace(go.Scatter(y=row, mode="lines", name=name, legendgroup=name, showlegend=i == 0,
                                     line=dict(width=1, color=palette[k % len(palette)])),
                          row=i // cols + 1, col=i % cols + 1)
    fig.update_yaxes(range=[0, 1])
    fig.update_layout(height=260 * rows, width=1000, title=f"{profile.model}: mean SE gate per channel and class "
                      f"({profile.images} images)", margin=dict(l=40, r=10, t=80, b=30))
    return fig
