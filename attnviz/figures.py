"""Figures: pure functions from tensors to ``plotly.graph_objects.Figure``.

Nothing here calls Streamlit, so every figure is tested without a browser and the
CLI writes the same figures the app shows. Gates are drawn on their absolute 0..1
scale; attention maps from 0 to their largest value, never min-max rescaled; Grad-CAM,
which pytorch-grad-cam min-max scales per image, on 0..1 with that said on its axis.
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

COLORSCALES = ("Viridis", "Inferno", "Cividis", "Greys", "Jet")
"""Colour maps offered for overlays; the first, perceptually uniform, is the default
(Jet is kept for those used to it, but its bright bands invent edges)."""
DEFAULT_COLORSCALE = COLORSCALES[0]
GATE_AXIS = "gate value (absolute, 0..1)"
ATTN_AXIS = "attention weight (each query's row sums to 1)"
CAM_AXIS = "relative (min-max scaled)"  # short: the compare view's maps are small


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


def jpeg_uri(im: Image.Image, quality: int = 85) -> str:
    """``im`` as a JPEG data URI, as it is (no resizing)."""
    buf = io.BytesIO()
    im.convert("RGB").save(buf, "JPEG", quality=quality)
    return "data:image/jpeg;base64," + base64.b64encode(buf.getvalue()).decode()


def image_uri(im: Image.Image, max_side: int = DISPLAY_MAX_SIDE) -> str:
    """The image as a JPEG data URI at display size: a few tens of kB in a figure,
    where a pixel array would be megabytes of JSON."""
    return jpeg_uri(display_image(im, max_side))


HEAD_BACKGROUND_SIDE = 192
"""Long side of each head's copy of the photo in ``query_panel``'s mosaic."""
HEAD_GAP_PX = 6
"""Gap between the head tiles of the mosaic, in pixels of that photo copy."""


def attention_colorbar(zmax: float, n: int) -> dict:
    """A colour bar for attention weights from 0 to ``zmax`` over ``n`` keys, with a tick
    at the uniform level 1/n: a map whose colours all sit near it is a plain average.
    (A row's largest weight is at least its mean 1/n, so the tick is always in range.)"""
    uniform = 1.0 / n
    step = 10 ** np.floor(np.log10(zmax / 4)) if zmax > 0 else 1.0
    step *= next(m for m in (1, 2, 5, 10) if zmax / (step * m) <= 5)
    ticks = [float(t) for t in np.arange(0, zmax + step * 1e-9, step) if abs(t - uniform) > 0.08 * zmax]
    vals = sorted([*ticks, uniform])
    text = [f"uniform 1/{n}" if v == uniform else f"{v:.3g}" for v in vals]
    return dict(title=dict(text=ATTN_AXIS, side="right"), thickness=14, len=1.0, tickvals=vals, ticktext=text)


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
        traces.append(dict(type="scatter", xaxis=f"x{n}", yaxis=f"y{n}", x=[query[0] + 0.5], y=[query[1] + 0.5],
                           mode="markers", hoverinfo="skip", showlegend=False,
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
    colorscale: str = DEFAULT_COLORSCALE,
    zmax: float | None = 1.0,
    colorbar_title: str = GATE_AXIS,
    colorbar: dict | None = None,
    query: tuple[float, float] | None = None,
    show_colorbar: bool = True,
    background: str | None = None,
    extent: tuple[int, int] | None = None,
    width_px: int = 480,
) -> go.Figure:
    """A (h, w) map drawn over the image it was computed from. ``zmax=None`` scales
    colours from 0 to the map's largest value. ``query`` = (x, y) marks that pixel, at its centre.
    ``background``: the image's ``image_uri``, when the caller already has it.
    ``extent``: (width, height) of the original image, the coordinates of ``query``
    and of the axes, when ``im`` is a smaller copy of it (``Analysis.display``).
    ``colorbar``: a whole colour bar (``attention_colorbar``) instead of one titled
    ``colorbar_title``. ``width_px``: the width in px the map is meant to be drawn at; the
    figure is as tall as the map is at that width, so the map fills the figure's height
    and its colour bar (``len=1``) is exactly as tall as the map."""
    z = _as_numpy(grid_map).astype(float)
    if not show_colorbar:
        colorbar = None
    elif colorbar is None:
        colorbar = dict(title=dict(text=colorbar_title, side="right"), thickness=14)
    extent = extent or im.size
    traces, image, axes = _overlay_parts(
        1, extent, z, background=background or image_uri(im), opacity=opacity, colorscale=colorscale,
        zmax=float(z.max()) if zmax is None else zmax, colorbar=colorbar, query=query)
    top = 40 if title else 0
    return go.Figure(data=traces, layout=dict(
        title=title, margin=dict(l=0, r=0, t=top, b=0), height=map_height(extent, width_px) + top, images=[image],
        **axes))


def cam_overlay(im: Image.Image, cam_map: torch.Tensor | np.ndarray, title: str = "", **kwargs) -> go.Figure:
    """Grad-CAM's (h, w) map (``attnviz.cam``) over the image, drawn as the CBAM spatial
    gate is (the same overlay, cells and colour map), on 0..1 with a colour bar that says
    the scale is relative: pytorch-grad-cam min-max scales every map. ``kwargs`` as
    ``overlay`` takes them."""
    return overlay(im, cam_map, title, zmax=1.0, colorbar_title=CAM_AXIS, **kwargs)


COLORBAR_PX = 120
"""Width a colour bar with its tick labels and title takes at the right of a figure
(a little more than it does, so that a map rather fills the height than the width)."""


def map_height(extent: tuple[int, int], width: int) -> int:
    """Height in px of a map of an ``extent`` = (W, H) image drawn ``width`` px wide."""
    return max(120, round(width * extent[1] / extent[0]))


def _tile_edges(n_tiles: int, cells: int, extent: float, gap: float) -> np.ndarray:
    """Brick edges along one axis of a mosaic of ``n_tiles`` maps of ``cells`` cells,
    each spanning ``extent`` image pixels, ``gap`` apart: ``cells + 1`` edges per tile;
    between two tiles one gap brick."""
    return np.concatenate([k * (extent + gap) + np.arange(cells + 1) * extent / cells for k in range(n_tiles)])


def head_mosaic(m: np.ndarray, rows: int, cols: int) -> tuple[np.ndarray, np.ndarray]:
    """The (heads, h, w) maps laid out as ``rows`` x ``cols`` tiles, one NaN row/column
    between tiles (and NaN tiles where there are fewer heads than tiles): (z, head),
    where ``head`` names the head of every cell (-1 in the gaps)."""
    heads, h, w = m.shape
    z = np.full((rows * (h + 1) - 1, cols * (w + 1) - 1), np.nan, dtype=m.dtype)
    head = np.full(z.shape, -1, dtype=np.int8)
    for i in range(heads):
        r, c = divmod(i, cols)
        z[r * (h + 1) : r * (h + 1) + h, c * (w + 1) : c * (w + 1) + w] = m[i]
        head[r * (h + 1) : r * (h + 1) + h, c * (w + 1) : c * (w + 1) + w] = i
    return z, head


def _photo_mosaic(tile: Image.Image, rows: int, cols: int) -> Image.Image:
    out = Image.new("RGB", (cols * tile.width + (cols - 1) * HEAD_GAP_PX,
                            rows * tile.height + (rows - 1) * HEAD_GAP_PX), "white")
    for r in range(rows):
        for c in range(cols):
            out.paste(tile, (c * (tile.width + HEAD_GAP_PX), r * (tile.height + HEAD_GAP_PX)))
    return out


def query_panel(
    im: Image.Image,
    maps: torch.Tensor | np.ndarray,
    query: tuple[float, float],
    layer: str,
    *,
    opacity: float = 0.6,
    colorscale: str = DEFAULT_COLORSCALE,
    extent: tuple[int, int] | None = None,
    quality: Sequence | None = None,
    width_px: int = 800,
) -> go.Figure:
    """For one query pixel and one self-attention layer, one figure: the mean over
    heads (large, left) and every head (a mosaic of tiles, right), overlaid on the
    image. ``maps`` is (heads, h, w). One colour scale from 0 to the largest weight
    among them, so heads compare honestly; the colour bar says what the values are and
    marks the uniform level 1/N; hovering a cell gives its weight (and its head).
    ``extent`` as in ``overlay``. ``quality``: each head's ``HeadQuality`` (this image's
    entropy ÷ log N and query-dependence), written on its tile. ``width_px``: the figure's
    width in px as drawn; the figure is as tall as the mean map is at that width, so
    the map and its colour bar have one height.

    This figure is redrawn on every click, and Plotly's cost in the browser grows with
    the number of traces and axes: so the heads are one heatmap over one photo mosaic
    (not a heatmap, photo and axes per head), and the figure is built from plain dicts
    in one pass (plotly.py validates each ``update`` call)."""
    m = _as_numpy(maps).astype(np.float32)  # the weights' own precision: half the JSON of float64
    heads, h, w = m.shape
    mean = m.mean(0)
    zmax = float(max(m.max(), mean.max()))
    width, height = extent = extent or im.size
    rows = 2 if heads > 1 else 1
    cols = -(-heads // rows)
    tile = display_image(im, HEAD_BACKGROUND_SIDE)
    tile_w, tile_h = tile.size
    gap_x, gap_y = HEAD_GAP_PX * width / tile_w, HEAD_GAP_PX * height / tile_h
    span_x, span_y = cols * width + (cols - 1) * gap_x, rows * height + (rows - 1) * gap_y
    split = 0.5
    colorbar = attention_colorbar(zmax, h * w)
    traces, mean_image, axes = _overlay_parts(
        1, extent, mean, background=image_uri(im), colorbar=colorbar, opacity=opacity, colorscale=colorscale,
        zmax=zmax, query=query, domain=([0.0, split - 0.02], [0.0, 1.0]))

    z, head = head_mosaic(m, rows, cols)
    tiles = [divmod(i, cols) for i in range(heads)]
    traces += [
        dict(type="heatmap", xaxis="x2", yaxis="y2", z=z, customdata=head, x=_tile_edges(cols, w, width, gap_x),
             y=_tile_edges(rows, h, height, gap_y), zmin=0, zmax=zmax, colorscale=colorscale, opacity=opacity,
             showscale=False, hoverongaps=False, hovertemplate="head %{customdata}<br>value %{z:.4f}<extra></extra>"),
        dict(type="scatter", xaxis="x2", yaxis="y2", mode="markers", hoverinfo="skip", showlegend=False,
             x=[c * (width + gap_x) + query[0] + 0.5 for _, c in tiles],
             y=[r * (height + gap_y) + query[1] + 0.5 for r, _ in tiles],
             marker=dict(symbol="x", size=9, color="white", line=dict(width=1.5, color="black"))),
    ]
    axes.update(
        xaxis2=dict(visible=False, range=[0, span_x], constrain="domain", domain=[split + 0.02, 1.0]),
        yaxis2=dict(visible=False, range=[span_y, 0], scaleanchor="x2", constrain="domain", constraintoward="top",
                    domain=[0.0, 1.0]))
    heads_image = dict(source=jpeg_uri(_photo_mosaic(tile, rows, cols)), xref="x2", yref="y2", x=0, y=0,
                       sizex=span_x, sizey=span_y, xanchor="left", yanchor="top", sizing="stretch", layer="below")
    labels = [dict(text=f"mean of {heads} heads", xref="paper", yref="paper", x=(split - 0.02) / 2, y=1.0,
                   showarrow=False, yanchor="bottom")]
    names = [f"head {i}" if quality is None else
             f"head {i}<br>entropy {quality[i].entropy:.2f}<br>query-dep. {quality[i].query_dependence:.2f}"
             for i in range(heads)]
    labels += [dict(text=names[i], xref="x2", yref="y2", x=c * (width + gap_x), y=r * (height + gap_y),
                    xanchor="left", yanchor="top", showarrow=False, font=dict(size=11),
                    bgcolor="rgba(255,255,255,0.75)") for i, (r, c) in enumerate(tiles)]
    return go.Figure(data=traces, layout=dict(
        title=f"{short_name(layer)}: where the query attends", margin=dict(l=0, r=0, t=60, b=0),
        height=map_height(extent, int((width_px - COLORBAR_PX) * (split - 0.02))) + 60,
        images=[mean_image, heads_image], annotations=labels, **axes))


def query_mean(
    im: Image.Image,
    maps: torch.Tensor | np.ndarray,
    query: tuple[float, float],
    layer: str,
    *,
    extent: tuple[int, int] | None = None,
    width_px: int = 480,
) -> go.Figure:
    """The compact form of ``query_panel``: only the mean over heads of the (heads, h, w)
    ``maps``, from 0 to its largest weight, the query marked."""
    mean = _as_numpy(maps).astype(float).mean(0)
    return overlay(im, mean, f"{short_name(layer)}: mean of {len(maps)} heads", zmax=None,
                   colorbar=attention_colorbar(float(mean.max()), mean.size), query=query, extent=extent,
                   width_px=width_px)


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
