"""The hover explorer: the self-attention map follows the pointer in the browser, with
no server round trip.

The server sends each image's attention ONCE, as one binary payload (``payload``); the
browser (``explorer_frontend/explorer.js``, a Streamlit custom component v2: inline
JavaScript in the page, no iframe) draws the hovered pixel's map for the mean and each
head. Nothing is re-derived in JavaScript: the pixel -> cell mapping travels as lookup
tables made by the package's own ``attnviz.image.cell_index``, the colour map as
plotly's colour stops, the weights as 8-bit codes with a scale per query row.

Payload layout (little-endian): ``b"AVX1"``, the header's length (uint32), the header
(UTF-8 JSON), then sections each starting on a 4-byte boundary at the offsets the header
gives: per layer ``rows`` (uint16, one per image row y: its cell row), ``cols`` (uint16,
one per image column x), ``scale`` (float32, heads * N) and ``codes`` (uint8, heads * N * N,
row-major: head, query, key); then the display photo as JPEG.
"""

from __future__ import annotations

import io
import json
import re
import struct
from functools import cache
from pathlib import Path

import numpy as np
import torch
from plotly.colors import get_colorscale, hex_to_rgb, unlabel_rgb

from ..analysis import Analysis
from ..figures import ATTENTION_SCALES, DEFAULT_MASS, short_name
from ..image import cell_index

MAGIC = b"AVX1"
MAX_PINS = 4
PIN_COLOURS = ("#ff4b4b", "#00c0f2", "#ffbd45", "#b86bff")  # one per pin, in order
FRONTEND = Path(__file__).with_name("explorer_frontend")
_PINS = re.compile(r"^\d+,\d+$")


def quantise(attn: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
    """(heads, N, N) attention -> (scale (heads, N) float32, codes (heads, N, N) uint8):
    each query row divided by its largest weight / 255 and rounded, so that
    ``codes * scale`` is within ``scale / 2`` (1/510 of the row's largest weight) of it."""
    a = attn.detach().float().cpu().numpy()
    top = a.max(-1)
    scale = np.where(top > 0, top / 255.0, 1.0).astype(np.float32)
    codes = np.rint(a / scale[..., None]).clip(0, 255).astype(np.uint8)
    return scale, codes


def dequantise(scale: np.ndarray, codes: np.ndarray) -> np.ndarray:
    """The weights the browser draws: ``codes * scale`` in float32, as the JavaScript computes them."""
    return codes.astype(np.float32) * scale[..., None]


def colour_stops(name: str) -> list[list[float]]:
    """Plotly's colour scale ``name`` as [position, r, g, b] stops (0..255), the same
    colours the app's figures use."""
    stops = []
    for pos, colour in get_colorscale(name):
        rgb = hex_to_rgb(colour) if colour.startswith("#") else unlabel_rgb(colour)
        stops.append([float(pos), *(float(v) for v in rgb)])
    return stops


def parse_pins(text: str | None, image_size: tuple[int, int]) -> list[tuple[int, int]]:
    """Pins from the URL's ``pins`` value ("x,y;x,y"): the well-formed ones inside the
    image, at most ``MAX_PINS``; anything else is dropped, never an error."""
    pins = []
    for part in (text or "").split(";"):
        if _PINS.match(part.strip()):
            x, y = (int(v) for v in part.split(","))
            if x < image_size[0] and y < image_size[1] and (x, y) not in pins:
                pins.append((x, y))
    return pins[:MAX_PINS]


def format_pins(pins) -> str:
    return ";".join(f"{int(x)},{int(y)}" for x, y in pins)


def _jpeg(a: Analysis) -> bytes:
    buf = io.BytesIO()
    a.display.convert("RGB").save(buf, "JPEG", quality=90)
    return buf.getvalue()


def payload(a: Analysis, colorscale: str, opacity: float, pins=(), ident: str = "") -> bytes:
    """Everything the browser needs to draw ``a``'s self-attention for any pixel, once.
    ``ident`` names the image and model: the browser keeps its query and pins while it
    stays the same."""
    sections: list[bytes] = []
    offset = 0

    def add(blob: bytes) -> list[int]:
        nonlocal offset
        start = offset
        sections.append(blob + b"\0" * (-len(blob) % 4))
        offset += len(sections[-1])
        return [start, len(blob)]

    width, height = a.image_size
    layers = []
    for name, attn in a.self_attn.items():
        h, w = a.self_attn_grid[name]
        rows, cols = cell_index(a.image_size, (h, w))
        scale, codes = quantise(attn)
        layers.append({
            "name": name, "label": short_name(name), "heads": int(attn.shape[0]), "grid": [h, w],
            "rows": add(rows.astype("<u2").tobytes()), "cols": add(cols.astype("<u2").tobytes()),
            "scale": add(scale.astype("<f4").tobytes()), "codes": add(codes.tobytes()),
            "bytes": int(scale.nbytes + codes.nbytes + 2 * (width + height)),
            "quality": [[q.entropy, q.query_dependence] for q in a.quality[name]],
        })
    header = {
        "image": [width, height], "display": list(a.display.size), "layers": layers,
        "jpeg": add(_jpeg(a)), "colorscale": colour_stops(colorscale), "opacity": float(opacity),
        "pins": [list(p) for p in pins][:MAX_PINS], "max_pins": MAX_PINS, "pin_colours": list(PIN_COLOURS),
        "id": ident, "scales": ATTENTION_SCALES, "mass": DEFAULT_MASS,
    }
    head = json.dumps(header).encode()
    head += b" " * (-(len(MAGIC) + 4 + len(head)) % 4)  # the sections start 4-byte aligned
    return MAGIC + struct.pack("<I", len(head)) + head + b"".join(sections)


@cache
def _component():
    import streamlit as st

    return st.components.v2.component(
        "attnviz.explorer",
        html=(FRONTEND / "explorer.html").read_text(),
        css=(FRONTEND / "explorer.css").read_text(),
        js=(FRONTEND / "explorer.js").read_text(),
        isolate_styles=False,
    )


def attention_explorer(data: bytes, key: str) -> list[tuple[int, int]] | None:
    """Mount the explorer on ``payload`` bytes; returns the pins the user has set in
    the browser (None until they change any)."""
    result = _component()(data=data, key=key, default={"pins": None}, on_pins_change=lambda: None,
                          height="content")
    pins = result.get("pins") if hasattr(result, "get") else getattr(result, "pins", None)
    return None if pins is None else [(int(x), int(y)) for x, y in pins]
