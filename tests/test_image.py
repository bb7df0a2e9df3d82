import io

import numpy as np
import pytest
import torch
from PIL import Image

from attnviz import limits
from attnviz.image import ImageError, feature_cell, grid_to_image, load_image, open_image

from .conftest import noise_image


def _bytes(im: Image.Image, fmt: str, **kw) -> bytes:
    buf = io.BytesIO()
    im.save(buf, fmt, **kw)
    return buf.getvalue()


@pytest.mark.parametrize("mode", ["L", "P", "RGBA", "LA", "CMYK", "I", "1"])
def test_every_mode_becomes_rgb(mode):
    im = load_image(noise_image(20, 10).convert(mode))
    assert im.mode == "RGB" and im.size == (20, 10)


def test_16_bit_greyscale_is_scaled_not_clipped():
    a = np.linspace(0, 65535, 64, dtype=np.uint16).reshape(8, 8)
    src = Image.fromarray(a)
    assert src.mode == "I;16"
    im = load_image(_bytes(src, "PNG"))
    out = np.asarray(im)[..., 0]
    assert out.min() == 0 and out.max() == 255 and len(np.unique(out)) > 30


def test_transparency_is_composited_on_white():
    rgba = Image.new("RGBA", (4, 4), (0, 0, 0, 0))
    assert np.asarray(load_image(rgba)).min() == 255


def test_exif_orientation_is_applied():
    im = noise_image(40, 20)
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise to display
    loaded = load_image(_bytes(im, "JPEG", exif=exif))
    assert loaded.size == (20, 40)


def test_animated_gif_gives_its_first_frame():
    frames = [Image.new("RGB", (8, 8), c) for c in [(255, 0, 0), (0, 0, 255)]]
    buf = io.BytesIO()
    frames[0].save(buf, "GIF", save_all=True, append_images=frames[1:])
    r, g, b = np.asarray(load_image(buf.getvalue()))[0, 0]
    assert r > 200 and b < 50


@pytest.mark.parametrize("data, match", [
    (b"", "empty"),
    (b"hello, I am text pretending to be a JPEG\n", "not a readable image"),
    (b"<html><body>hi</body></html>", "not a readable image"),
    (b"<svg xmlns='http://www.w3.org/2000/svg'></svg>", "not a readable image"),
    (b"%PDF-1.4\n%\xe2\xe3\xcf\xd3\n", "not a readable image"),
])
def test_non_images_are_one_clear_error(data, match):
    with pytest.raises(ImageError, match=match) as exc:
        load_image(data)
    # one line, naming the formats that are accepted
    assert "\n" not in str(exc.value)
    assert "JPEG" in str(exc.value)


def test_truncated_jpeg_is_refused():
    data = _bytes(noise_image(64, 64), "JPEG")
    with pytest.raises(ImageError, match="damaged or truncated"):
        load_image(data[: len(data) // 2])


def test_decompression_bomb_is_refused_before_decoding():
    data = _bytes(Image.new("1", (30000, 30000)), "PNG")
    assert len(data) < 2_000_000
    with pytest.raises(ImageError, match="claims 900,000,000 pixels"):
        load_image(data)


@pytest.mark.parametrize("size", [(400, 100), (120, 100), (2000, 30)])
def test_a_jpeg_over_the_pixel_budget_is_decoded_within_it(monkeypatch, size):
    # (120, 100) is only 1.2 budgets: decoding at full scale and shrinking afterwards
    # would hold more than the budget, if only for a moment.
    monkeypatch.setattr(limits, "PIXEL_BUDGET", 10_000)
    im, original = open_image(_bytes(noise_image(*size), "JPEG"))
    assert im.width * im.height <= 10_000 and original == size
    assert im.width / im.height == pytest.approx(size[0] / size[1], rel=0.1)


def test_other_formats_over_the_pixel_budget_are_refused_before_decoding(monkeypatch):
    monkeypatch.setattr(limits, "PIXEL_BUDGET", 10_000)
    with pytest.raises(ImageError, match=r"PNG image has 400x100 pixels; PNG images are accepted up to") as exc:
        load_image(_bytes(noise_image(400, 100), "PNG"))
    assert "JPEG" in str(exc.value) and "\n" not in str(exc.value)
    assert load_image(_bytes(noise_image(100, 100), "PNG")).size == (100, 100)  # at the budget: fine


def test_a_missing_file_is_a_clear_error(tmp_path):
    with pytest.raises(ImageError, match="no such file"):
        load_image(tmp_path / "nope.jpg")


def test_feature_cell_on_a_non_square_image():
    # 100 x 40 image, 8 x 8 grid: columns are 12.5 px wide, rows 5 px high.
    assert feature_cell(0, 0, (100, 40), (8, 8)) == (0, 0)
    assert feature_cell(99, 39, (100, 40), (8, 8)) == (7, 7)
    assert feature_cell(11, 4, (100, 40), (8, 8)) == (0, 0)
    assert feature_cell(13, 5, (100, 40), (8, 8)) == (1, 1)
    assert feature_cell(50, 0, (100, 40), (8, 8)) == (0, 4)
    assert feature_cell(0, 20, (100, 40), (8, 8)) == (4, 0)
    for x, y in [(100, 0), (0, 40), (-1, 0), (0, -1)]:  # one past each edge
        with pytest.raises(ValueError, match="outside"):
            feature_cell(x, y, (100, 40), (8, 8))


def test_grid_to_image_is_the_inverse_of_feature_cell():
    grid = np.arange(6 * 4).reshape(6, 4)
    up = grid_to_image(grid, (37, 23))
    assert up.shape == (23, 37)
    for y in range(23):
        for x in range(37):
            r, c = feature_cell(x, y, (37, 23), (6, 4))
            assert up[y, x] == grid[r, c]


def test_display_image_shrinks_the_long_side_to_the_limit_and_keeps_small_images_as_they_are():
    from attnviz.image import display_image

    wide = noise_image(1000, 400)
    shown = display_image(wide, 512)
    assert shown.size == (512, 205)  # 400 * 0.512 = 204.8
    np.testing.assert_array_equal(np.asarray(shown), np.asarray(wide.resize((512, 205), Image.BILINEAR)))
    at_limit = noise_image(512, 300)
    assert display_image(at_limit, 512) is at_limit and display_image(noise_image(40, 30), 512).size == (40, 30)
    # a sliver keeps at least one pixel on its short side, whichever it is
    assert display_image(noise_image(5000, 3), 512).size == (512, 1)
    assert display_image(noise_image(3, 5000), 512).size == (1, 512)


def test_normalize_is_pixels_over_255_minus_mean_over_std():
    from attnviz.image import normalize

    batch = torch.tensor(np.random.default_rng(0).integers(0, 256, (2, 3, 4, 5)), dtype=torch.uint8)
    mean, std = [0.485, 0.456, 0.406], [0.229, 0.224, 0.225]
    expected = (batch.float() / 255 - torch.tensor(mean).view(1, 3, 1, 1)) / torch.tensor(std).view(1, 3, 1, 1)
    torch.testing.assert_close(normalize(batch, mean, std), expected)
    assert normalize(batch, mean, std, torch.channels_last).is_contiguous(memory_format=torch.channels_last)


def test_squash_resizes_the_whole_image_bilinearly_to_a_square():
    from attnviz.image import squash

    im = noise_image(90, 40)
    np.testing.assert_array_equal(np.asarray(squash(im, 64)), np.asarray(im.resize((64, 64), Image.BILINEAR)))
    assert squash(noise_image(64, 64), 64).size == (64, 64)
