"""A public demo is fed everything: odd images, hostile files, interrupted writes."""

from __future__ import annotations

import io
import struct
import time
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image

import attnviz
from attnviz import export, limits
from attnviz.image import ImageError, feature_cell, grid_to_image, load_image

from .conftest import noise_image

ROOT = Path(__file__).resolve().parent.parent


def _encode(im: Image.Image, fmt: str, **kw) -> bytes:
    buf = io.BytesIO()
    im.save(buf, fmt, **kw)
    return buf.getvalue()


@pytest.fixture
def sa(tiny_env):
    return attnviz.load_model("tiny_sa_resnet18")


@pytest.mark.parametrize("make", [
    lambda: _encode(noise_image(1, 1), "PNG"),
    lambda: _encode(noise_image(4000, 20), "JPEG"),
    lambda: _encode(noise_image(20, 3000), "PNG"),
    lambda: _encode(noise_image(64, 48).convert("CMYK"), "JPEG"),
    lambda: _encode(noise_image(64, 48).convert("P"), "GIF"),
    lambda: _encode(noise_image(64, 48).convert("RGBA"), "WEBP"),
    lambda: _encode(Image.fromarray(np.arange(48 * 64, dtype=np.uint16).reshape(48, 64) * 20), "PNG"),
    lambda: _encode(noise_image(64, 48), "TIFF"),
    lambda: _encode(noise_image(64, 48), "BMP"),
], ids=["1x1", "panorama-4000x20", "tall-20x3000", "cmyk-jpeg", "palette-gif", "rgba-webp", "16-bit-png",
        "tiff", "bmp"])
def test_valid_images_of_every_kind_are_analysed(sa, make):
    a = attnviz.analyze(make(), sa)
    assert a.image.mode == "RGB"
    w, h = a.image_size
    q = a.query("layer2.1.attn.softmax", w - 1, h - 1)
    torch.testing.assert_close(q.sum((1, 2)), torch.ones(len(q)))  # each head's map sums to 1


def _corrupt_png() -> bytes:
    data = bytearray(_encode(noise_image(32, 32), "PNG"))
    idat = data.index(b"IDAT")
    data[idat + 10] ^= 0xFF  # damage the compressed pixels, CRC now wrong
    return bytes(data)


def _bomb_png(side: int = 30000) -> bytes:
    """A tiny valid PNG whose header claims ``side`` x ``side`` pixels."""
    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))
    ihdr = struct.pack(">IIBBBBB", side, side, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b"")


@pytest.mark.parametrize("data, says", [
    (b"", "empty"),
    (b"Just some text.\n" * 10, "not a readable image"),
    (b"<!doctype html><html><body><img src=x onerror=alert(1)></body></html>", "not a readable image"),
    (b'<?xml version="1.0"?><svg xmlns="http://www.w3.org/2000/svg" width="10" height="10"/>',
     "not a readable image"),
    (b"%PDF-1.7\n1 0 obj<<>>endobj\ntrailer<<>>\n%%EOF", "not a readable image"),
    (_encode(noise_image(64, 64), "JPEG")[:3000], "damaged or truncated"),
    (_corrupt_png(), "damaged or truncated"),
    (_bomb_png(), "claims 900,000,000 pixels"),
], ids=["empty", "text", "html", "svg", "pdf", "truncated-jpeg", "corrupt-png", "bomb"])
def test_invalid_files_fail_fast_with_one_line_naming_the_problem(data, says):
    t0 = time.perf_counter()
    with pytest.raises(ImageError) as exc:
        load_image(data)
    assert time.perf_counter() - t0 < 1.0
    msg = str(exc.value)
    assert says in msg and "\n" not in msg
    if says == "not a readable image":
        assert "JPEG, PNG, WebP, BMP, GIF or TIFF" in msg


def test_a_file_over_the_upload_limit_is_refused_before_decoding(monkeypatch):
    monkeypatch.setattr(limits, "MAX_FILE_BYTES", 1000)
    with pytest.raises(ImageError, match=f"larger than {limits.MAX_UPLOAD_MB} MB"):
        load_image(b"\xff" * 1001)


def test_a_large_honest_jpeg_is_decoded_small(monkeypatch):
    monkeypatch.setattr(limits, "PIXEL_BUDGET", 250_000)
    big = _encode(noise_image(2400, 1600), "JPEG", quality=60)
    im = load_image(big)
    assert im.width * im.height <= 250_000 and im.size[0] / im.size[1] == pytest.approx(1.5, rel=0.02)


def test_a_downscaled_photo_keeps_the_pixel_coordinates_of_the_original(sa, monkeypatch):
    monkeypatch.setattr(limits, "PIXEL_BUDGET", 250_000)
    a = attnviz.analyze(_encode(noise_image(2400, 1600), "JPEG", quality=60), sa)
    assert a.image.width * a.image.height <= 250_000
    assert a.image_size == (2400, 1600)  # what the user's pixels refer to
    layer = "layer2.1.attn.softmax"
    h, w = a.self_attn_grid[layer]
    for x, y in [(0, 0), (2399, 1599), (1234, 321)]:
        row, col = feature_cell(x, y, (2400, 1600), (h, w))
        assert a.cell(layer, x, y) == (row, col)
        torch.testing.assert_close(a.query(layer, x, y), a.self_attn[layer][:, row * w + col].reshape(-1, h, w))
    assert max(a.display.size) <= 512
    assert export.summary(a)["image_size"] == [2400, 1600]


def test_a_large_jpeg_is_decoded_only_as_large_as_the_model_and_the_display_need(sa):
    data = _encode(noise_image(2000, 1500), "JPEG", quality=70)
    a = attnviz.analyze(data, sa)
    assert a.image_size == (2000, 1500)
    assert a.image.size == (1000, 750)  # 1/2 scale: 1/4 would be smaller than the 512 px display copy
    assert max(a.display.size) == 512
    assert load_image(data).size == (2000, 1500)  # within the pixel budget: full size unless asked
    tall = attnviz.analyze(_encode(noise_image(300, 4000), "JPEG"), sa)
    assert tall.image.size == (75, 1000)  # 1/8 would take its short side under the tiny model's 64 px input
    assert tall.query("layer3.1.attn.softmax", 299, 3999).shape[0] == 4


def test_exif_rotated_photos_are_shown_upright(sa):
    im = Image.new("RGB", (60, 30), (255, 0, 0))
    im.paste((0, 0, 255), (0, 0, 30, 30))  # blue on the left half
    exif = Image.Exif()
    exif[0x0112] = 6  # stored rotated: display needs 90 degrees clockwise
    a = attnviz.analyze(_encode(im, "JPEG", exif=exif, quality=95), sa)
    assert a.image_size == (30, 60)
    top = np.asarray(a.image)[5, 15]
    assert top[2] > 200 and top[0] < 60  # after the rotation, blue is on top


@settings(max_examples=200, deadline=None)
@given(width=st.integers(1, 5000), height=st.integers(1, 5000), h=st.integers(1, 64), w=st.integers(1, 64),
       fx=st.floats(0, 1, exclude_max=True), fy=st.floats(0, 1, exclude_max=True))
def test_feature_cell_contains_the_pixel(width, height, h, w, fx, fy):
    x, y = int(fx * width), int(fy * height)
    row, col = feature_cell(x, y, (width, height), (h, w))
    assert 0 <= row < h and 0 <= col < w
    # The cell's rectangle on the original image, [col W / w, (col + 1) W / w), contains the
    # pixel's centre x + 0.5: compared in integers (times 2 w), so no rounding can excuse it.
    assert 2 * col * width <= (2 * x + 1) * w < 2 * (col + 1) * width
    assert 2 * row * height <= (2 * y + 1) * h < 2 * (row + 1) * height
    # ... and the overlay paints that pixel with that cell's value.
    grid = np.arange(h * w).reshape(h, w)
    assert grid_to_image(grid, (width, height))[y, x] == grid[row, col]


@settings(max_examples=15, deadline=None)
@given(width=st.integers(1, 300), height=st.integers(1, 300), fx=st.floats(0, 1, exclude_max=True),
       fy=st.floats(0, 1, exclude_max=True))
def test_query_picks_the_row_of_the_cell_under_the_pixel(width, height, fx, fy):
    model = _sa_model()
    a = attnviz.analyze(noise_image(width, height), model)
    x, y = int(fx * width), int(fy * height)
    for layer, (h, w) in a.self_attn_grid.items():
        row, col = a.cell(layer, x, y)
        assert 2 * col * width <= (2 * x + 1) * w < 2 * (col + 1) * width
        assert 2 * row * height <= (2 * y + 1) * h < 2 * (row + 1) * height
        torch.testing.assert_close(a.query(layer, x, y), a.self_attn[layer][:, row * w + col].reshape(-1, h, w))


_SA = {}


def _sa_model():
    if "m" not in _SA:
        from .conftest import tiny_model

        _SA["m"] = tiny_model("sa_resnet18")
    return _SA["m"]


def test_outputs_are_written_atomically(tmp_path, monkeypatch):
    target = tmp_path / "x.npz"
    target.write_bytes(b"previous complete file")

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(export.os, "replace", interrupted)
    with pytest.raises(KeyboardInterrupt):
        export.write_atomic(target, b"new contents")
    assert target.read_bytes() == b"previous complete file"


def test_an_interrupted_explain_leaves_no_half_written_file(tiny_env, tmp_path, monkeypatch):
    from attnviz import explain

    def boom(*a, **k):
        raise KeyboardInterrupt

    monkeypatch.setattr(explain, "json_bytes", boom)
    p = tmp_path / "img.png"
    noise_image(40, 30).save(p)
    out = tmp_path / "out"
    out.mkdir()
    with pytest.raises(KeyboardInterrupt):
        explain.explain_one(p, attnviz.load_model("tiny_se_resnet18"), out, "img", png=False)
    assert sorted(f.name for f in out.iterdir() if not f.name.startswith(".")) == ["img.npz"]
    assert np.load(out / "img.npz")["probs"].shape == (3,)  # what exists is complete


def test_limits_are_the_same_in_the_app_config_and_the_docker_config():
    tomllib = pytest.importorskip("tomllib", reason="tomllib needs Python 3.11")
    for path in [ROOT / ".streamlit" / "config.toml", ROOT / "deploy" / "streamlit.toml"]:
        cfg = tomllib.loads(path.read_text())
        assert cfg["server"]["maxUploadSize"] == limits.MAX_CHECKPOINT_MB, path  # the largest uploader's
    sidebar = (ROOT / "attnviz" / "app" / "sidebar.py").read_text()  # the uploaders of images and weights pairs
    assert sidebar.count("max_upload_size=limits.MAX_UPLOAD_MB") >= 3
