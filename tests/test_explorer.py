"""The hover explorer's payload: read back here byte by byte, as the browser reads it,
and compared with the package's own answers (``Analysis.query``, ``feature_cell``)."""

from __future__ import annotations

import io
import json
import struct
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from plotly.colors import get_colorscale
from streamlit.testing.v1 import AppTest

import attnviz
from attnviz.app import explorer
from attnviz.image import feature_cell

from .conftest import noise_image

APP = str(Path(__file__).resolve().parent.parent / "app.py")


def read_payload(data: bytes) -> dict:
    """The payload decoded by its documented layout (attnviz/app/explorer.py)."""
    assert data[:4] == b"AVX1"
    (head_len,) = struct.unpack("<I", data[4:8])
    header = json.loads(data[8 : 8 + head_len])
    base = 8 + head_len
    assert base % 4 == 0

    def section(sec, dtype):
        start, length = sec
        assert start % 4 == 0
        return np.frombuffer(data, dtype=dtype, count=length // np.dtype(dtype).itemsize, offset=base + start)

    for layer in header["layers"]:
        h, w = layer["grid"]
        n = h * w
        layer["rows"], layer["cols"] = section(layer["rows"], "<u2"), section(layer["cols"], "<u2")
        layer["scale"] = section(layer["scale"], "<f4").reshape(layer["heads"], n)
        layer["codes"] = section(layer["codes"], "u1").reshape(layer["heads"], n, n)
    start, length = header["jpeg"]
    header["photo"] = Image.open(io.BytesIO(data[base + start : base + start + length]))
    return header


@pytest.fixture(scope="module")
def wide():
    """An analysis of a non-square image by a tiny self-attention model."""
    from .conftest import tiny_model

    torch.manual_seed(0)
    return attnviz.analyze(noise_image(151, 67, seed=4), tiny_model("sa_resnet18"))


def test_quantised_rows_are_within_half_a_step_of_the_exact_ones():
    rng = np.random.default_rng(0)
    attn = torch.tensor(rng.dirichlet(np.full(49, 0.3), size=(3, 49)), dtype=torch.float32)
    scale, codes = explorer.quantise(attn)
    assert scale.shape == (3, 49) and codes.dtype == np.uint8
    back = explorer.dequantise(scale, codes)
    err = np.abs(back - attn.numpy())
    assert (err <= scale[..., None] / 2 + 1e-7).all()
    top = attn.numpy().max(-1)
    assert (err <= top[..., None] / 510 + 1e-7).all()  # within 0.2 % of the row's largest weight
    assert (codes.max(-1) == 255).all()  # each row uses the whole range


def test_the_payload_carries_every_query_row_the_cell_mapping_and_the_photo(wide):
    p = read_payload(explorer.payload(wide, "Viridis", 0.55, pins=[(3, 4)], ident="x"))
    width, height = wide.image_size
    assert p["image"] == [width, height] and p["id"] == "x" and p["pins"] == [[3, 4]]
    assert p["photo"].size == tuple(p["display"]) == wide.display.size
    assert [layer["name"] for layer in p["layers"]] == list(wide.self_attn)
    for layer in p["layers"]:
        h, w = layer["grid"]
        # the package's mapping, for every pixel: no guesswork left to the browser
        assert [int(layer["rows"][y]) for y in range(height)] == [feature_cell(0, y, wide.image_size, (h, w))[0]
                                                                  for y in range(height)]
        assert [int(layer["cols"][x]) for x in range(width)] == [feature_cell(x, 0, wide.image_size, (h, w))[1]
                                                                 for x in range(width)]
        drawn = explorer.dequantise(layer["scale"], layer["codes"])
        for x, y in [(0, 0), (width - 1, height - 1), (width - 1, 0), (0, height - 1), (77, 30)]:
            row, col = layer["rows"][y], layer["cols"][x]
            exact = wide.query(layer["name"], x, y).reshape(layer["heads"], -1).numpy()
            step = layer["scale"][:, row * w + col][:, None]
            assert (np.abs(drawn[:, row * w + col] - exact) <= step / 2 + 1e-7).all()
        assert len(layer["quality"]) == layer["heads"]
        quality = wide.quality[layer["name"]]
        assert layer["quality"][0] == pytest.approx([quality[0].entropy, quality[0].query_dependence])


def test_the_colour_stops_are_plotlys():
    stops = explorer.colour_stops("Viridis")
    assert [s[0] for s in stops] == [pos for pos, _ in get_colorscale("Viridis")]
    assert stops[0][1:] == [68.0, 1.0, 84.0]  # #440154
    assert explorer.colour_stops("Jet")[0][1:] == [0.0, 0.0, 131.0]


def test_pins_from_the_url_keep_only_well_formed_pixels_inside_the_image():
    assert explorer.parse_pins("5,6;7,8", (10, 10)) == [(5, 6), (7, 8)]
    assert explorer.parse_pins("5,6;10,1;1,10;-1,2;a,b;5,6;;3", (10, 10)) == [(5, 6)]
    assert explorer.parse_pins(";".join(f"{i},{i}" for i in range(9)), (10, 10)) == [(i, i) for i in range(4)]
    assert explorer.parse_pins(None, (10, 10)) == []
    assert explorer.format_pins([(1, 2), (3, 4)]) == "1,2;3,4"


def test_the_view_sends_the_payload_once_with_the_pins_of_the_url(tiny_env, monkeypatch):
    monkeypatch.setattr("attnviz.weights.SHIPPED_DIR", Path("/nonexistent"))
    from attnviz.app.service import image_key, sample_images

    temple = image_key(next(iter(sample_images().values())).read_bytes())[:16]  # the image the page opens on
    at = AppTest.from_file(APP, default_timeout=120)
    at.query_params["pins"] = "5,6;99999,1;abc"
    at.query_params["pinned"] = "0123456789abcdef"  # pins set on another image
    at.run()
    at.radio(key="view").set_value("Self-attention").run()
    assert not at.exception, at.exception
    (component,) = at.get("bidi_component")
    assert read_payload(component.proto.bytes)["pins"] == []  # they do not land on this one
    at = AppTest.from_file(APP, default_timeout=120)
    at.query_params["pins"] = "5,6;99999,1;abc"
    at.query_params["pinned"] = temple
    at.run()
    at.radio(key="view").set_value("Self-attention").run()
    assert not at.exception, at.exception
    (component,) = at.get("bidi_component")
    p = read_payload(component.proto.bytes)
    assert p["pins"] == [[5, 6]]  # the pixel outside the image and the garbage are dropped
    assert [layer["name"] for layer in p["layers"]] == ["layer2.1.attn.softmax", "layer3.1.attn.softmax"]
    payloads = at.session_state["explorer-payloads"]
    at.radio(key="view").set_value("Predictions").run()
    at.radio(key="view").set_value("Self-attention").run()
    assert at.session_state["explorer-payloads"] is payloads and len(payloads) == 1  # built once
