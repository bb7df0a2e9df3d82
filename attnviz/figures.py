"""Figures: pure functions from tensors to ``plotly.graph_objects.Figure``.

Nothing here calls Streamlit, so every figure is tested without a browser and the
CLI writes the same figures the app shows. Gates are drawn on their absolute 0..1
scale; attention maps from 0 to their largest value, never min-max rescaled; Grad-CAM,
which pytorch-grad-cam min-max scales per image, on 0..1 with that said on its axis.
"""

from __future__ import annotations

import base64
import html
import io
import json
from collections.abc import Mapping, Sequence

import numpy as np
import plotly.graph_objects as go
import torch
from PIL import Image

from .image import DISPLAY_MAX_SIDE, display_image, feature_cell

COLORSCALES = ("Viridis", "Inferno", "Cividis", "Greys", "Jet")
"""Colour maps offered for overlays; the first, perceptually uniform, is the default
(Jet is kept for those used to it, but its bright bands invent edges)."""
DEFAULT_COLORSCALE = COLORSCALES[0]
GATE_AXIS = "gate value (absolute, 0..1)"
ATTN_AXIS = "attention weight (rows sum to 1)"
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


def top_k_html(top: Sequence[tuple[str, float]]) -> str:
    """The same bars as ``top_k_bars`` as plain HTML (best first, on 0..100 %), for the
    page's first view: no plotting library to load before a visitor sees predictions.
    Each class on a line of its own with its probability (the whole name, wrapped where
    the column is narrow, never cut), its bar under it. ``data-top5`` carries the exact
    (class, probability) pairs, for tests and tools."""
    pairs = [[str(n), float(p)] for n, p in top]
    rows = "".join(
        '<div style="margin:4px 0 6px">'
        '<div style="display:flex;justify-content:space-between;gap:8px;line-height:1.25">'
        f'<span style="overflow-wrap:break-word;min-width:0">{html.escape(n)}</span>'
        f'<span style="flex:0 0 auto;font-variant-numeric:tabular-nums">{p:.1%}</span></div>'
        '<div style="background:rgba(128,128,128,0.15);height:10px;border-radius:2px;margin-top:2px">'
        f'<div style="height:100%;width:{100 * min(max(p, 0.0), 1.0):.2f}%;background:#4c78a8;border-radius:2px">'
        '</div></div></div>'
        for n, p in pairs)
    return f"<div data-top5='{html.escape(json.dumps(pairs), quote=True)}'>{rows}</div>"


MAX_BARS = 256
"""Most bars ``gate_bars`` draws, and most columns ``gates_heatmap`` draws: a block with
more channels (a ResNet-50's 2,048) is shown in bins of consecutive channels (of ranks
when sorted), each with its mean, its min and its max."""


def channel_bins(n: int, max_bins: int = MAX_BARS) -> np.ndarray:
    """Edges of at most ``max_bins`` bins of equal width (the last may be narrower) over
    ``n`` channels: [0, w, 2w, ..., n]; one bin per channel when ``n <= max_bins``."""
    width = -(-n // max_bins)  # ceil
    return np.append(np.arange(0, n, width), n)


def _binned(g: np.ndarray, edges: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(mean, min, max) of ``g`` in each bin of ``edges``."""
    starts = edges[:-1]
    counts = np.diff(edges)
    mean = np.add.reduceat(g, starts) / counts
    return mean, np.minimum.reduceat(g, starts), np.maximum.reduceat(g, starts)


def gate_bars(gates: torch.Tensor | np.ndarray, title: str = "", sort: bool = False,
              max_bars: int = MAX_BARS) -> go.Figure:
    """One bar per channel: the (C,) gates of one block on the absolute 0..1 scale.
    ``sort`` orders channels by gate value (the hover still names each channel). More
    than ``max_bars`` channels are drawn as bins of consecutive channels (ranks, when
    sorted): each bar the bin's mean, its whiskers the bin's min and max."""
    g = _as_numpy(gates).astype(float)
    channels = np.arange(len(g))
    if sort:
        order = np.argsort(-g, kind="stable")
        g, channels = g[order], channels[order]
    what = "channel, sorted by gate" if sort else "channel"
    if len(g) <= max_bars:
        fig = go.Figure(go.Bar(
            x=np.arange(len(g)), y=g, customdata=channels, marker_color="#e45756",
            hovertemplate="channel %{customdata}<br>gate %{y:.3f}<extra></extra>",
        ))
    else:
        edges = channel_bins(len(g), max_bars)
        mean, lo, hi = _binned(g, edges)
        label = "ranks" if sort else "channels"
        fig = go.Figure(go.Bar(
            x=edges[:-1], y=mean, width=np.diff(edges) * 0.9, offset=0, marker_color="#e45756",
            customdata=np.stack([edges[:-1], edges[1:] - 1, lo, hi], axis=1),
            error_y=dict(type="data", symmetric=False, array=hi - mean, arrayminus=mean - lo, thickness=1,
                         width=0, color="#7f7f7f"),
            hovertemplate=f"{label} %{{customdata[0]}}–%{{customdata[1]}}<br>mean gate %{{y:.3f}}<br>"
                          "min %{customdata[2]:.3f}, max %{customdata[3]:.3f}<extra></extra>",
        ))
        what += f" ({len(g):,} in {len(mean)} bins of {edges[1] - edges[0]}: mean, whiskers min–max)"
    fig.update_layout(title=title, bargap=0.05, height=260, margin=dict(l=10, r=10, t=40 if title else 10, b=40))
    fig.update_yaxes(range=[0, 1], title=GATE_AXIS)
    fig.update_xaxes(title=what)
    return fig


def gates_heatmap(gates: Mapping[str, torch.Tensor], title: str = "", max_columns: int = MAX_BARS, *,
                  clickable: bool = False) -> go.Figure:
    """All blocks at once: rows are blocks, columns channels, colour the gate in 0..1.
    Blocks have different widths; missing channels are left blank. Blocks wider than
    ``max_columns`` are drawn in bins of consecutive channels (the same bin width for
    every row, so a column is the same channels in each row): colour the bin's mean,
    its min and max on hover. ``clickable`` (unbinned only) lays an invisible marker on
    every cell (customdata: [block path, channel]; plotly selects scatter points on a
    click, not heatmap cells), which shows as a white square when selected."""
    names = list(gates)
    width = max(len(g) for g in gates.values())
    edges = channel_bins(width, max_columns)
    binned = len(edges) - 1 < width
    z, lo, hi = (np.full((len(names), len(edges) - 1), np.nan) for _ in range(3))
    for i, n in enumerate(names):
        g = _as_numpy(gates[n]).astype(float)
        if binned:
            own = edges[edges < len(g)]
            k = len(own)
            z[i, :k], lo[i, :k], hi[i, :k] = _binned(g, np.append(own, len(g)))
        else:
            z[i, : len(g)] = g
    if binned:
        step = int(edges[1] - edges[0])
        hover = ("%{y} channels %{customdata[0]}–%{customdata[1]}<br>mean gate %{z:.3f}<br>"
                 "min %{customdata[2]:.3f}, max %{customdata[3]:.3f}<extra></extra>")
        first = np.broadcast_to(edges[:-1], z.shape)
        custom = np.stack([first, first + step - 1, lo, hi], axis=-1)
        x_title = f"channel ({width:,} in bins of {step}: colour the mean)"
    else:
        hover, custom, x_title = "%{y} channel %{x}<br>gate %{z:.3f}<extra></extra>", None, "channel"
    fig = go.Figure(go.Heatmap(
        z=z, y=[short_name(n) for n in names], x=edges[:-1], zmin=0, zmax=1, colorscale="Viridis",
        customdata=custom, colorbar=dict(title=dict(text="gate (0..1)", side="right")), hovertemplate=hover,
        hoverinfo="skip" if clickable and not binned else None,
    ))
    if clickable and not binned:
        cells = [(i, c) for i, n in enumerate(names) for c in range(len(gates[n]))]
        fig.add_trace(go.Scatter(
            x=[c for _, c in cells], y=[short_name(names[i]) for i, _ in cells], mode="markers",
            customdata=[[names[i], c, float(z[i, c])] for i, c in cells], showlegend=False,
            marker=dict(symbol="square", size=9, opacity=0, color="white", line=dict(width=0)),
            selected=dict(marker=dict(opacity=1)), unselected=dict(marker=dict(opacity=0)),
            hovertemplate="%{y} channel %{x}<br>gate %{customdata[2]:.3f}<br>click to see its maps<extra></extra>"))
    fig.update_layout(title=title, height=120 + 24 * len(names), margin=dict(l=10, r=10, t=40 if title else 10, b=40))
    fig.update_yaxes(autorange="reversed")
    fig.update_xaxes(title=x_title)
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
HEAD_LABEL_PX = 34
"""Rows of the mosaic this far apart (in the photo copy's pixels) where a label goes under each tile."""


ATTENTION_SCALES = {"log": "log (3 decades)", "sqrt": "square root", "linear": "linear"}
"""How attention weights map onto the colours, as the hover explorer offers them (the
first is the default there): a layer's largest weight is often one query's own cell, and
on a linear scale the rest of its maps sits near the bottom."""
DEFAULT_MASS = 0.7
"""The share of each map's attention whose cells are coloured (the rest of the photo is
dimmed), as DINO's figures threshold the cumulative mass."""


def scaled(values: np.ndarray, zmax: float, scale: str = "linear") -> np.ndarray:
    """Where attention weights fall on 0..1 for a layer whose largest weight is ``zmax``:
    ``linear`` v / zmax, ``sqrt`` its square root, ``log`` three decades below zmax."""
    v = np.clip(np.asarray(values, dtype=np.float64) / (zmax or 1.0), 0, None)
    if scale == "linear":
        return v
    if scale == "sqrt":
        return np.sqrt(v)
    if scale == "log":
        return np.where(v <= 1e-3, 0.0, np.log10(np.maximum(v, 1e-3) * 1000) / 3)
    raise ValueError(f"scale {scale!r}: expected one of {', '.join(ATTENTION_SCALES)}")


def held(maps: np.ndarray, mass: float) -> np.ndarray:
    """For each map of ``maps`` (..., h, w), the cells that hold ``mass`` of its total
    weight, the largest first (as the hover explorer picks them); every cell for mass >= 1."""
    m = np.asarray(maps, dtype=np.float64)
    flat = m.reshape(-1, m.shape[-2] * m.shape[-1])
    if mass >= 1:
        return np.ones(m.shape, dtype=bool)
    order = np.argsort(-flat, axis=1, kind="stable")
    ranked = np.take_along_axis(flat, order, axis=1)
    before = np.cumsum(ranked, axis=1) - ranked  # the weight of the cells ranked above each one
    keep_ranked = before < mass * flat.sum(1, keepdims=True)
    keep = np.zeros_like(keep_ranked)
    np.put_along_axis(keep, order, keep_ranked, axis=1)
    return keep.reshape(m.shape)


def attention_colorbar(zmax: float, n: int, scale: str = "linear") -> dict:
    """A colour bar for attention weights from 0 to ``zmax`` over ``n`` keys, with a tick
    at the uniform level 1/n: a map whose colours all sit near it is a plain average.
    (A row's largest weight is at least its mean 1/n, so the tick is always in range.)"""
    uniform = 1.0 / n
    if scale == "log":
        ticks = [zmax * 10.0 ** -k for k in range(4)]
    else:
        step = 10 ** np.floor(np.log10(zmax / 4)) if zmax > 0 else 1.0
        step *= next(m for m in (1, 2, 5, 10) if zmax / (step * m) <= 5)
        ticks = [float(t) for t in np.arange(0, zmax + step * 1e-9, step)]
    at = lambda v: float(scaled(v, zmax, scale)) * zmax if scale != "linear" else v  # noqa: E731 - colour positions
    ticks = [t for t in ticks if abs(at(t) - at(uniform)) > 0.08 * zmax]
    raw = sorted([*ticks, uniform])
    text = [f"uniform 1/{n}" if v == uniform else f"{v:.3g}" for v in raw]
    return dict(title=dict(text=ATTN_AXIS, side="right"), thickness=14, len=1.0, tickvals=[at(v) for v in raw],
                ticktext=text)


def _overlay_parts(axis: int, extent: tuple[int, int], z: np.ndarray, *, background: str, opacity: float,
                   colorscale: str, zmax: float, colorbar: dict | None, query: tuple[float, float] | None,
                   domain: tuple[list[float], list[float]] | None = None,
                   zmin: float = 0.0) -> tuple[list[dict], dict, dict]:
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
        dy=height / h, zmin=zmin, zmax=zmax, colorscale=colorscale, opacity=opacity, showscale=colorbar is not None,
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
        title=title, margin=dict(l=0, r=30 if colorbar else 0, t=top, b=0), height=map_height(extent, width_px) + top,
        images=[image],
        **axes))


CONTEXT_AXIS = "context weight (the map sums to 1)"


def context_overlay(im: Image.Image, grid_map: torch.Tensor | np.ndarray, title: str = "", **kwargs) -> go.Figure:
    """A query-independent (H, W) attention map that sums to 1 (timm's GCNet context,
    a LambdaNet key), over the image, from 0 to its largest value, with a tick at the
    uniform level 1/N. ``kwargs`` as ``overlay``'s."""
    z = _as_numpy(grid_map).astype(float)
    bar = attention_colorbar(float(z.max()), z.size)
    bar["title"]["text"] = CONTEXT_AXIS
    return overlay(im, z, title, zmax=None, colorbar=bar, **kwargs)


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


def _photo_mosaic(tile: Image.Image, rows: int, cols: int, gap_y: int = HEAD_GAP_PX) -> Image.Image:
    out = Image.new("RGB", (cols * tile.width + (cols - 1) * HEAD_GAP_PX,
                            rows * tile.height + (rows - 1) * gap_y), "white")
    for r in range(rows):
        for c in range(cols):
            out.paste(tile, (c * (tile.width + HEAD_GAP_PX), r * (tile.height + gap_y)))
    return out


def _cross_hair(query: tuple[float, float], extent: tuple[int, int], grid: tuple[int, int],
                offsets: Sequence[tuple[float, float]] = ((0.0, 0.0),)) -> list[dict]:
    """The query's cell marked by a cross-hair whose arms stop at the cell's edges (black
    under white), at each (dx, dy) offset of a mosaic: the cell's own colour, often where
    a head attends most, stays visible."""
    (width, height), (h, w) = extent, grid
    row, col = feature_cell(min(query[0], width - 1), min(query[1], height - 1), extent, grid)
    x0, x1, y0, y1 = col * width / w, (col + 1) * width / w, row * height / h, (row + 1) * height / h
    cx, cy, arm = (x0 + x1) / 2, (y0 + y1) / 2, 1.2 * max(x1 - x0, y1 - y0)
    xs, ys = [], []
    for dx, dy in offsets:
        for (a, b), (c, d) in (((x0 - arm, x0), (cy, cy)), ((x1, x1 + arm), (cy, cy)),
                               ((cx, cx), (y0 - arm, y0)), ((cx, cx), (y1, y1 + arm))):
            xs += [dx + a, dx + b, None]
            ys += [dy + c, dy + d, None]
    return [dict(type="scatter", x=xs, y=ys, mode="lines", hoverinfo="skip", showlegend=False,
                 line=dict(color=colour, width=lw)) for colour, lw in (("black", 4), ("white", 2))]


def _dimmed(keep: np.ndarray, **where) -> dict:
    """A heatmap that darkens the photo (black at 0.6) where ``keep`` is False."""
    return dict(type="heatmap", z=np.where(keep, np.nan, 1.0), zmin=0, zmax=1, opacity=0.6, showscale=False,
                colorscale=[[0, "black"], [1, "black"]], hoverinfo="skip", hoverongaps=False, **where)


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
    zmax: float | None = None,
    scale: str = "linear",
    mass: float = 1.0,
) -> go.Figure:
    """For one query pixel and one self-attention layer, one figure: the mean over
    heads (large, left) and every head (a mosaic of tiles, right), overlaid on the
    image. ``maps`` is (heads, h, w). One colour scale for the mean and every head, from
    0 to ``zmax`` (give the layer's largest weight in this image, so that every query is
    drawn on one scale; default: the largest among these maps), on ``scale`` (``scaled``);
    the colour bar gives the weights and marks the uniform level 1/N; hovering a cell
    gives its weight (and its head). ``mass`` < 1 colours only the cells that hold that
    share of each map's weight and dims the rest (``held``). ``extent`` as in
    ``overlay``. ``quality``: each head's ``HeadQuality`` (this image's entropy ÷ log N and
    query-dependence), written under its tile. ``width_px``: the figure's width in px as
    drawn; the figure is as tall as the mean map is at that width, so the map and its
    colour bar have one height. The query's cell is marked by a cross-hair around it.

    This figure is redrawn on every click, and Plotly's cost in the browser grows with
    the number of traces and axes: so the heads are one heatmap over one photo mosaic
    (not a heatmap, photo and axes per head), and the figure is built from plain dicts
    in one pass (plotly.py validates each ``update`` call)."""
    m = _as_numpy(maps).astype(np.float32)  # the weights' own precision: half the JSON of float64
    heads, h, w = m.shape
    mean = m.mean(0)
    zmax = float(zmax) if zmax is not None else float(max(m.max(), mean.max()))
    keep = held(np.concatenate([mean[None], m]), mass)
    raw = scale == "linear" and mass >= 1  # the weights themselves are the colours' values

    def colours(v: np.ndarray, k: np.ndarray) -> np.ndarray:
        return v if raw else np.where(k, scaled(v, zmax, scale) * zmax, np.nan).astype(np.float32)

    width, height = extent = extent or im.size
    rows = 2 if heads > 2 else 1
    cols = -(-heads // rows)
    tile = display_image(im, HEAD_BACKGROUND_SIDE)
    tile_w, tile_h = tile.size
    gap_x = HEAD_GAP_PX * width / tile_w
    gap_y = (HEAD_LABEL_PX if quality is not None else HEAD_GAP_PX) * height / tile_h  # labels under the tiles
    span_x, span_y = cols * width + (cols - 1) * gap_x, rows * height + (rows - 1) * gap_y
    split = 0.5
    colorbar = attention_colorbar(zmax, h * w, scale)
    traces, mean_image, axes = _overlay_parts(
        1, extent, colours(mean, keep[0]), background=image_uri(im), colorbar=colorbar, opacity=opacity,
        colorscale=colorscale, zmax=zmax, query=None, domain=([0.0, split - 0.02], [0.0, 1.0]))
    if not raw:  # the weights themselves stay in the figure: its hover, and anyone reading it
        traces[0].update(customdata=mean, hovertemplate="weight %{customdata:.4f}<extra></extra>")
        traces.insert(0, _dimmed(keep[0], x0=traces[0]["x0"], dx=traces[0]["dx"], y0=traces[0]["y0"],
                                 dy=traces[0]["dy"]))
    traces += _cross_hair(query, extent, (h, w))
    z, head = head_mosaic(np.stack([colours(m[i], keep[1 + i]) for i in range(heads)]), rows, cols)
    tiles = [divmod(i, cols) for i in range(heads)]
    edges = dict(x=_tile_edges(cols, w, width, gap_x), y=_tile_edges(rows, h, height, gap_y))
    mosaic = dict(type="heatmap", xaxis="x2", yaxis="y2", z=z, customdata=head, **edges, zmin=0, zmax=zmax,
                  colorscale=colorscale, opacity=opacity, showscale=False, hoverongaps=False,
                  hovertemplate="head %{customdata}<br>value %{z:.4f}<extra></extra>")
    if not raw:
        mosaic.update(text=np.char.mod("%.4f", head_mosaic(m, rows, cols)[0]),
                      hovertemplate="head %{customdata}<br>weight %{text}<extra></extra>")
        traces.append(_dimmed(head_mosaic(keep[1:].astype(np.float32), rows, cols)[0] != 0, xaxis="x2",
                              yaxis="y2", **edges))
    traces.append(mosaic)
    for hair in _cross_hair(query, extent, (h, w), [(c * (width + gap_x), r * (height + gap_y)) for r, c in tiles]):
        traces.append({**hair, "xaxis": "x2", "yaxis": "y2"})
    axes.update(
        xaxis2=dict(visible=False, range=[0, span_x], constrain="domain", domain=[split + 0.02, 1.0]),
        yaxis2=dict(visible=False, range=[span_y + (gap_y if quality is not None else 0), 0], scaleanchor="x2",
                    constrain="domain", constraintoward="top", domain=[0.0, 1.0]))
    heads_image = dict(source=jpeg_uri(_photo_mosaic(tile, rows, cols, HEAD_LABEL_PX if quality is not None
                                                     else HEAD_GAP_PX)),
                       xref="x2", yref="y2", x=0, y=0, sizex=span_x, sizey=span_y, xanchor="left", yanchor="top",
                       sizing="stretch", layer="below")
    labels = [dict(text=f"mean of {heads} heads", xref="paper", yref="paper", x=(split - 0.02) / 2, y=1.0,
                   showarrow=False, yanchor="bottom")]
    names = [f"head {i}" if quality is None else
             f"head {i}<br>entropy {quality[i].entropy:.2f} · query-dep. {quality[i].query_dependence:.2f}"
             for i in range(heads)]
    # under each tile (above it without the figures, whose row gap is too thin for a label)
    labels += [dict(text=names[i], xref="x2", yref="y2", x=c * (width + gap_x) + width / 2,
                    y=r * (height + gap_y) + (height if quality is not None else 0), xanchor="center",
                    yanchor="top" if quality is not None else "bottom", showarrow=False, font=dict(size=10))
               for i, (r, c) in enumerate(tiles)]
    return go.Figure(data=traces, layout=dict(
        title=f"{short_name(layer)}: where the query attends", margin=dict(l=0, r=30, t=60, b=0),
        height=map_height(extent, int((width_px - COLORBAR_PX) * (split - 0.02))) + 60 + (30 if quality else 0),
        images=[mean_image, heads_image], annotations=labels, **axes))


def query_mean(
    im: Image.Image,
    maps: torch.Tensor | np.ndarray,
    query: tuple[float, float],
    layer: str,
    *,
    extent: tuple[int, int] | None = None,
    width_px: int = 480,
    zmax: float | None = None,
    scale: str = "linear",
    mass: float = 1.0,
) -> go.Figure:
    """The compact form of ``query_panel``: only the mean over heads of the (heads, h, w)
    ``maps``, from 0 to ``zmax`` (default: its largest weight) on ``scale``, the cells
    holding ``mass`` of it coloured, the query's cell marked by a cross-hair around it."""
    mean = _as_numpy(maps).astype(float).mean(0)
    zmax = float(zmax) if zmax is not None else float(mean.max())
    keep = held(mean, mass)
    raw = scale == "linear" and mass >= 1
    z = mean if raw else np.where(keep, scaled(mean, zmax, scale) * zmax, np.nan)
    fig = overlay(im, z, f"{short_name(layer)}: mean of {len(maps)} heads", zmax=zmax,
                  colorbar=attention_colorbar(zmax, mean.size, scale), extent=extent, width_px=width_px)
    extent = extent or im.size
    data = [*fig.data, *(go.Scatter(**hair) for hair in _cross_hair(query, extent, mean.shape))]
    if not raw:
        shown = fig.data[0]
        shown.update(customdata=mean, hovertemplate="weight %{customdata:.4f}<extra></extra>")
        data.insert(0, go.Heatmap(**_dimmed(keep, x0=shown.x0, dx=shown.dx, y0=shown.y0, dy=shown.dy)))
    return go.Figure(data=data, layout=fig.layout)


def profile_curves(profile, block: str, image_gates: torch.Tensor | np.ndarray | None = None) -> go.Figure:
    """The SE paper's figure for one block, drawn so that its point shows: each class's mean
    gate per channel minus the mean over the classes (a block whose gates do not depend on
    the class is a flat line at 0), one line per class, and, when given, this image's gates
    minus the same mean in black."""
    means = np.asarray(profile.means[block], dtype=float)  # classes, channels
    centre = means.mean(0)
    fig = go.Figure()
    for name, row in zip(profile.classes, means):
        fig.add_trace(go.Scatter(y=row - centre, mode="lines", name=name, line=dict(width=1)))
    if image_gates is not None:
        fig.add_trace(go.Scatter(y=_as_numpy(image_gates) - centre, mode="lines", name="this image",
                                 line=dict(width=2.5, color="black")))
    spec = profile.specificity[block]
    top = float(np.abs(means - centre).max()) if image_gates is None else float(
        max(np.abs(means - centre).max(), np.abs(_as_numpy(image_gates) - centre).max()))
    fig.update_layout(title=f"{short_name(block)}: class specificity {spec:.2f}", height=320,
                      margin=dict(l=10, r=10, t=40, b=40), legend=dict(font=dict(size=10)))
    fig.update_yaxes(range=[-1.05 * top, 1.05 * top], title="gate − its mean over the classes", zeroline=True)
    fig.update_xaxes(title="channel")
    return fig


def specificity_by_depth(profile, chosen: str | None = None) -> go.Figure:
    """The measured class specificity of every block (the between-class share of the gates'
    variance, 0..1), from the first block to the last: the SE paper found it rising with
    depth. ``chosen`` is drawn darker."""
    blocks = list(profile.specificity)
    fig = go.Figure(go.Bar(x=[short_name(b) for b in blocks], y=[profile.specificity[b] for b in blocks],
                           marker_color=["#1f4e79" if b == chosen else "#7aa6d1" for b in blocks],
                           hovertemplate="%{x}: %{y:.2f}<extra></extra>"))
    fig.update_layout(title="class specificity by depth", height=320, margin=dict(l=10, r=10, t=40, b=40))
    fig.update_yaxes(range=[0, 1], title="between-class share of variance")
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


PROB_AXIS = "probability (0..1)"


def before_after_bars(
    classes: Sequence[str],
    before: torch.Tensor | np.ndarray,
    after: torch.Tensor | np.ndarray,
    *,
    target: int | None = None,
    k: int = 5,
    title: str = "",
) -> go.Figure:
    """An intervention's effect: for ``k`` classes, a pair of bars, its probability before
    (grey) and after (colour), on the absolute 0..1 scale: the ``k`` classes that are most
    probable before or after (by the larger of the two), ``target`` always among them;
    ordered by their probability before, the most probable on top. ``before``/``after``:
    (num_classes,) probabilities; ``target``: the index of the class whose change is
    reported, named in bold."""
    b, a = _as_numpy(before).astype(float), _as_numpy(after).astype(float)
    ranked = np.argsort(-np.maximum(a, b), kind="stable").tolist()
    shown = ([target] if target is not None else []) + [i for i in ranked if i != target]
    shown = shown[:k]
    shown.sort(key=lambda i: -b[i])
    shown.reverse()  # plotly draws the first category at the bottom
    names = [f"<b>{classes[i]}</b>" if i == target else classes[i] for i in shown]
    fig = go.Figure()
    # horizontal groups stack their traces upwards: "after" first puts "before" on top
    for label, p, colour in (("after", a, "#4c78a8"), ("before", b, "#bab0ac")):
        fig.add_trace(go.Bar(x=p[shown], y=names, orientation="h", name=label, marker_color=colour,
                             text=[f"{p[i]:.1%}" for i in shown], textposition="outside", cliponaxis=False,
                             textfont=dict(size=11), hovertemplate=f"%{{y}}<br>{label} %{{x:.1%}}<extra></extra>"))
    fig.update_layout(title=title, barmode="group", height=70 + 44 * len(shown), legend=dict(traceorder="reversed"),
                      margin=dict(l=10, r=40, t=40 if title else 10, b=30))
    fig.update_xaxes(range=[0, 1], title=PROB_AXIS, tickformat=".0%")
    return fig


FEATURE_AXIS = "activation (signed)"
SIGNED_COLORSCALE = "RdBu_r"
"""Feature maps are signed: a diverging scale, red above 0, blue below, white at 0."""


def _symmetric(maps: Sequence[np.ndarray]) -> float:
    """The half-range of a symmetric colour scale that holds every value of ``maps``."""
    top = max(float(np.abs(m).max()) for m in maps)
    return top if top > 0 else 1.0


def channel_maps(
    im: Image.Image,
    maps: Mapping[str, torch.Tensor | np.ndarray],
    title: str = "",
    *,
    opacity: float = 0.55,
    colorscale: str = SIGNED_COLORSCALE,
    extent: tuple[int, int] | None = None,
    width_px: int = 900,
) -> go.Figure:
    """One channel's (h, w) feature maps side by side over the image, e.g. before its
    gate, after the channel gate, after the spatial gate (``maps``: caption -> map).
    One colour scale for all, symmetric about 0 (-a..a, a the largest |value| among
    them): features are signed, and a gate below 1 shows as a map nearer 0.
    ``extent`` and ``width_px`` as in ``overlay``."""
    zs = [_as_numpy(m).astype(np.float32) for m in maps.values()]
    a = _symmetric(zs)
    extent = extent or im.size
    background = image_uri(im)
    n = len(zs)
    traces, images, axes = [], [], {}
    for i, z in enumerate(zs):
        left, right = i / n, (i + 1) / n
        colorbar = dict(title=dict(text=FEATURE_AXIS, side="right"), thickness=14) if i == 0 else None
        t, image, ax = _overlay_parts(i + 1, extent, z, background=background, opacity=opacity,
                                      colorscale=colorscale, zmax=a, zmin=-a, colorbar=colorbar, query=None,
                                      domain=([left + 0.01, right - 0.01], [0.0, 1.0]))
        traces += t
        images.append(image)
        axes.update(ax)
    labels = [dict(text=name, xref="paper", yref="paper", x=(i + 0.5) / n, y=1.0, showarrow=False,
                   yanchor="bottom") for i, name in enumerate(maps)]
    top = 70 if title else 30
    return go.Figure(data=traces, layout=dict(
        title=title, margin=dict(l=0, r=0, t=top, b=0), images=images, annotations=labels,
        height=map_height(extent, int((width_px - COLORBAR_PX) / n)) + top, **axes))


THUMB_SIDE = 96
"""Long side of each tile's copy of the photo in ``channel_thumbnails``."""


def channel_thumbnails(
    im: Image.Image,
    maps: torch.Tensor | np.ndarray,
    labels: Sequence[str],
    title: str = "",
    *,
    rows: int = 2,
    opacity: float = 0.55,
    colorscale: str = SIGNED_COLORSCALE,
    extent: tuple[int, int] | None = None,
    width_px: int = 900,
) -> go.Figure:
    """Small multiples: the (n, h, w) ``maps`` (e.g. the channels of a block with the
    largest and the smallest gates) as ``rows`` rows of tiles over the image, each
    tile captioned with its entry of ``labels``; one colour scale for all, symmetric
    about 0. One heatmap over one photo mosaic, as in ``query_panel``."""
    m = _as_numpy(maps).astype(np.float32)
    n, h, w = m.shape
    if len(labels) != n:
        raise ValueError(f"{n} maps but {len(labels)} labels")
    a = _symmetric([m])
    width, height = extent = extent or im.size
    cols = -(-n // rows)
    tile = display_image(im, THUMB_SIDE)
    gap_x, gap_y = HEAD_GAP_PX * width / tile.width, HEAD_GAP_PX * height / tile.height
    span_x, span_y = cols * width + (cols - 1) * gap_x, rows * height + (rows - 1) * gap_y
    z, index = head_mosaic(m, rows, cols)
    trace = dict(type="heatmap", z=z, customdata=index, x=_tile_edges(cols, w, width, gap_x),
                 y=_tile_edges(rows, h, height, gap_y), zmin=-a, zmax=a, colorscale=colorscale, opacity=opacity,
                 hoverongaps=False, colorbar=dict(title=dict(text=FEATURE_AXIS, side="right"), thickness=14),
                 hovertemplate="tile %{customdata}<br>value %{z:.3f}<extra></extra>")
    photo = dict(source=jpeg_uri(_photo_mosaic(tile, rows, cols)), xref="x", yref="y", x=0, y=0, sizex=span_x,
                 sizey=span_y, xanchor="left", yanchor="top", sizing="stretch", layer="below")
    tiles = [divmod(i, cols) for i in range(n)]
    notes = [dict(text=labels[i], xref="x", yref="y", x=c * (width + gap_x), y=r * (height + gap_y),
                  xanchor="left", yanchor="top", showarrow=False, font=dict(size=10),
                  bgcolor="rgba(255,255,255,0.75)") for i, (r, c) in enumerate(tiles)]
    top = 40 if title else 0
    tile_px = (width_px - COLORBAR_PX) / cols
    return go.Figure(data=[trace], layout=dict(
        title=title, margin=dict(l=0, r=0, t=top, b=0), images=[photo], annotations=notes,
        height=round(rows * map_height(extent, int(tile_px))) + top,
        xaxis=dict(visible=False, range=[0, span_x], constrain="domain"),
        yaxis=dict(visible=False, range=[span_y, 0], scaleanchor="x", constrain="domain", constraintoward="top")))


def axial_line_maps(along_column: torch.Tensor | np.ndarray, along_row: torch.Tensor | np.ndarray,
                    cell: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """An axial layer's two steps for the query ``cell`` = (row, col), each as (heads, H, W)
    maps that are NaN (not drawn) off the step's line: the height step's (heads, H) weights
    ``along_column`` down column col, the width step's (heads, W) ``along_row`` across row row."""
    col_w, row_w = _as_numpy(along_column).astype(np.float32), _as_numpy(along_row).astype(np.float32)
    heads, h = col_w.shape
    w = row_w.shape[1]
    row, col = cell
    column_map = np.full((heads, h, w), np.nan, dtype=np.float32)
    row_map = np.full((heads, h, w), np.nan, dtype=np.float32)
    column_map[:, :, col] = col_w
    row_map[:, row, :] = row_w
    return column_map, row_map


def axial_panels(
    im: Image.Image,
    along_column: torch.Tensor | np.ndarray,
    along_row: torch.Tensor | np.ndarray,
    composed: torch.Tensor | np.ndarray,
    query: tuple[float, float],
    cell: tuple[int, int],
    layer: str,
    *,
    head: int | None = None,
    extent: tuple[int, int] | None = None,
    width_px: int = 300,
) -> list[go.Figure]:
    """Three maps of one query pixel in one axial attention layer, over the image: the
    height step along the query's column, the width step along its row (each NaN, so not
    drawn, off its line; ``axial_line_maps``) and the composed map of both steps
    (``composed``: (heads, H, W), ``Analysis.query``). ``head``: one head, or None for the
    mean over heads. Each from 0 to its own largest weight, its colour bar marking the
    uniform level of its row (1/H, 1/W, 1/N)."""
    full = _as_numpy(composed).astype(np.float32)
    pick = (lambda m: m.mean(0, keepdims=True)) if head is None else (lambda m: m[head : head + 1])
    which = f"mean of {full.shape[0]} heads" if head is None else f"head {head}"
    column_map, row_map = axial_line_maps(pick(_as_numpy(along_column)), pick(_as_numpy(along_row)), cell)
    h, w = full.shape[1:]
    parts = ((column_map[0], f"height step: column {cell[1]}", h),
             (row_map[0], f"width step: row {cell[0]}", w),
             (pick(full)[0], "composed: both steps", h * w))
    figs = []
    for z, what, n in parts:
        zmax = float(np.nanmax(z))
        figs.append(overlay(im, z, f"{short_name(layer)}, {which}<br>{what}", zmax=zmax,
                            colorbar=attention_colorbar(zmax, n), query=query, extent=extent, width_px=width_px))
    return figs
