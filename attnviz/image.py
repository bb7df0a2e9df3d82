"""Image loading, preparation for a model, and mapping between image and feature grid.

A model sees the whole image squashed to a ``size`` x ``size`` square (aspect ratio not
kept), because that is how the training images were prepared (Imagenette-224 squashes
every photo to 224 x 224). Cropping would hide part of what the user uploaded, and
letterboxing would show the model grey bars it never saw in training.
"""

from __future__ import annotations

import io
import math
import os
import re
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from PIL import ExifTags, Image, ImageOps, UnidentifiedImageError

from . import limits

ImageSource = str | os.PathLike | bytes | Image.Image

ACCEPTED = "JPEG, PNG, WebP, BMP, GIF or TIFF"
IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff"}

DISPLAY_MAX_SIDE = 512
"""Long side of the copy of an image that figures draw on (the model sees the full image)."""


class ImageError(ValueError):
    """An input that is not a usable image; the message is one line for the user."""


def _open(source: ImageSource) -> Image.Image:
    if isinstance(source, Image.Image):
        return source
    if isinstance(source, bytes):
        if len(source) == 0:
            raise ImageError(f"the file is empty; expected a {ACCEPTED} image")
        if len(source) > limits.MAX_FILE_BYTES:
            raise ImageError(f"the file is larger than {limits.MAX_UPLOAD_MB} MB")
        fp: io.IOBase | str | os.PathLike = io.BytesIO(source)
    else:
        path = Path(source)
        if not path.is_file():
            raise ImageError("no such file")
        size = path.stat().st_size
        if size == 0:
            raise ImageError(f"the file is empty; expected a {ACCEPTED} image")
        if size > limits.MAX_FILE_BYTES:
            raise ImageError(f"the file is larger than {limits.MAX_UPLOAD_MB} MB")
        fp = path
    try:
        # Image.open reads the header only: no pixel is decoded here.
        return Image.open(fp, formats=("JPEG", "PNG", "WEBP", "BMP", "GIF", "TIFF"))
    except Image.DecompressionBombError as exc:
        claimed = re.search(r"\((\d+) pixels\)", str(exc))
        what = f"{int(claimed.group(1)):,} pixels" if claimed else "too many pixels"
        raise ImageError(
            f"the image claims {what}, more than the {limits.MAX_DECODE_PIXELS // 1_000_000} MP accepted"
        ) from None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError):
        raise ImageError(f"not a readable image; expected a {ACCEPTED} image") from None


def _flatten(im: Image.Image) -> Image.Image:
    """Any PIL mode -> RGB. Transparency is composited on white, 16-bit and float
    greyscale are scaled to 8 bits by their range rather than clipped."""
    if im.mode == "RGB":
        return im
    if im.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
        a = np.asarray(im, dtype=np.float64)
        if im.mode.startswith("I;16"):
            a = a / 257.0
        elif a.size and (a.max() > 255 or a.min() < 0):
            lo, hi = float(a.min()), float(a.max())
            a = (a - lo) * (255.0 / (hi - lo if hi > lo else 1.0))
        return Image.fromarray(np.clip(a + 0.5, 0, 255).astype(np.uint8), "L").convert("RGB")
    if im.mode == "P" and "transparency" in im.info or im.mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        rgba = im.convert("RGBA")
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(white, rgba).convert("RGB")
    return im.convert("RGB")


def list_images(directory: str | os.PathLike, limit: int | None = None) -> list[Path]:
    """Image files under ``directory`` (recursively, by suffix), sorted by path; with
    ``limit``, that many spread evenly over the sorted list (so an ImageFolder's
    classes are all represented)."""
    root = Path(directory)
    if not root.is_dir():
        raise ImageError(f"{root}: not a directory")
    files = sorted(p for p in root.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
    if not files:
        raise ImageError(f"{root}: no {ACCEPTED} files found")
    if limit is not None:
        if limit < 1:
            raise ValueError(f"the image limit must be at least 1, got {limit}")
        if limit < len(files):
            files = [files[i * len(files) // limit] for i in range(limit)]
    return files


def open_image(source: ImageSource, for_size: int | None = None) -> tuple[Image.Image, tuple[int, int]]:
    """``load_image``, and the (width, height) of the image as stored, upright: the
    coordinate system of the user's pixels, also when the returned image is smaller.

    ``for_size``: the side of the square model input the image is for. A JPEG is then
    decoded at the smallest of the 1/1, 1/2, 1/4, 1/8 scales that still covers that
    input and the display copy (``DISPLAY_MAX_SIDE`` on the long side): a 12 MP phone
    photo decodes 16 times fewer pixels, and the model and the figures see the same."""
    im = _open(source)
    w, h = im.size
    if w < limits.MIN_SIDE or h < limits.MIN_SIDE:
        raise ImageError(f"the image has no pixels ({w}x{h}); expected a {ACCEPTED} image")
    if w * h > limits.MAX_DECODE_PIXELS:
        raise ImageError(
            f"the image claims {w}x{h} pixels, more than the {limits.MAX_DECODE_PIXELS // 1_000_000} MP accepted"
        )
    over_budget = w * h > limits.PIXEL_BUDGET and not isinstance(source, Image.Image)
    if over_budget and im.format != "JPEG":
        # Only JPEG can be decoded at a reduced size; any other format would exist in
        # memory at full size first.
        raise ImageError(
            f"the {im.format} image has {w}x{h} pixels; {im.format} images are accepted up to "
            f"{limits.PIXEL_BUDGET // 1_000_000} MP (JPEGs up to {limits.MAX_DECODE_PIXELS // 1_000_000} MP, "
            "downscaled while decoding)"
        )
    if im.format == "JPEG" and (over_budget or for_size):
        # draft() decodes at the smallest of the 1/1, 1/2, 1/4, 1/8 scales whose sides are
        # at least those asked for, i.e. less than twice them: asking for at most half
        # the budget's side keeps the decoded pixels within the budget.
        want_w, want_h = w, h
        if for_size:
            long_side = max(w, h)
            want_w = max(for_size, math.ceil(DISPLAY_MAX_SIDE * w / long_side))
            want_h = max(for_size, math.ceil(DISPLAY_MAX_SIDE * h / long_side))
        if over_budget:
            scale = 2 * math.sqrt(w * h / limits.PIXEL_BUDGET)
            want_w, want_h = min(want_w, math.ceil(w / scale)), min(want_h, math.ceil(h / scale))
        im.draft("RGB", (want_w, want_h))
    try:
        turned = im.getexif().get(ExifTags.Base.Orientation, 1) in (5, 6, 7, 8)
        im.seek(0)
        im.load()
        im = ImageOps.exif_transpose(im)
        im = _flatten(im)
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as exc:
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise ImageError(f"the image is damaged or truncated ({reason}); expected a {ACCEPTED} image") from None
    if im.width * im.height > limits.PIXEL_BUDGET:  # a PIL image passed in directly
        scale = math.sqrt(im.width * im.height / limits.PIXEL_BUDGET)
        im = im.resize((max(1, int(im.width / scale)), max(1, int(im.height / scale))), Image.BILINEAR)
    return im, ((h, w) if turned else (w, h))


def load_image(source: ImageSource) -> Image.Image:
    """Open any image PIL reads (every mode; animated images give their first frame),
    apply its EXIF orientation, and return it as RGB with at most
    ``limits.PIXEL_BUDGET`` pixels: JPEGs larger than that are decoded at a reduced
    scale (keeping the aspect ratio), other formats larger than that are refused, so
    no decoded image exceeds the budget. Raises ``ImageError`` with a one-line message
    for anything else."""
    return open_image(source)[0]


def display_image(im: Image.Image, max_side: int = DISPLAY_MAX_SIDE) -> Image.Image:
    """A copy at most ``max_side`` on its long side, for drawing (not for the model)."""
    scale = max_side / max(im.size)
    if scale >= 1:
        return im
    return im.resize((max(1, round(im.width * scale)), max(1, round(im.height * scale))), Image.BILINEAR)


RESAMPLE = {"bilinear": Image.BILINEAR, "bicubic": Image.BICUBIC, "nearest": Image.NEAREST,
            "lanczos": Image.LANCZOS, "box": Image.BOX, "hamming": Image.HAMMING}


def squash(im: Image.Image, size: int, interpolation: str = "bilinear") -> Image.Image:
    """The whole image resized to ``size`` x ``size`` (antialiased; ``interpolation``: a
    key of ``RESAMPLE``, e.g. timm's models' "bicubic")."""
    if im.size == (size, size):
        return im
    return im.resize((size, size), RESAMPLE.get(interpolation, Image.BILINEAR))


def normalize(
    batch: torch.Tensor,
    mean: Sequence[float],
    std: Sequence[float],
    memory_format: torch.memory_format = torch.contiguous_format,
) -> torch.Tensor:
    """(B, 3, H, W) pixels in 0..255 (uint8 or float) -> float32 normalised per channel,
    laid out in ``memory_format``. Computed in the input's layout (contiguous reads and
    writes) and converted once at the end: writing channels_last straight from an NCHW
    input was slower."""
    m = torch.tensor(mean, dtype=torch.float32).view(1, 3, 1, 1) * 255.0
    s = torch.tensor(std, dtype=torch.float32).view(1, 3, 1, 1) * 255.0
    return torch.sub(batch, m).div_(s).contiguous(memory_format=memory_format)


def to_uint8_tensor(im: Image.Image) -> torch.Tensor:
    """RGB PIL image -> (3, H, W) uint8 tensor."""
    return torch.from_numpy(np.asarray(im, dtype=np.uint8).copy()).permute(2, 0, 1).contiguous()


def prepare(im: Image.Image, size: int, mean: Sequence[float], std: Sequence[float],
            interpolation: str = "bilinear") -> torch.Tensor:
    """What a model sees: RGB image -> squashed -> (1, 3, size, size) normalised float."""
    return normalize(to_uint8_tensor(squash(im, size, interpolation)).unsqueeze(0), mean, std)


def feature_cell(x: float, y: float, image_size: tuple[int, int], grid: tuple[int, int]) -> tuple[int, int]:
    """The (row, col) of the ``grid`` = (h, w) feature cell that contains pixel (x, y)
    of an image of ``image_size`` = (width, height).

    The image is squashed onto the model's square input and the feature grid tiles
    that input uniformly, so column ``j`` covers image x in [j W / w, (j+1) W / w).
    Pixel x covers [x, x+1); its centre decides. Out-of-range pixels are refused.
    """
    width, height = image_size
    h, w = grid
    if not (0 <= x < width and 0 <= y < height):
        raise ValueError(f"pixel ({x}, {y}) is outside the {width}x{height} image")
    col = min(w - 1, int((int(x) + 0.5) * w / width))
    row = min(h - 1, int((int(y) + 0.5) * h / height))
    return row, col


def cell_index(image_size: tuple[int, int], grid: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """``feature_cell`` for every pixel at once: (rows, cols), ``rows[y]`` the cell row
    of image row y and ``cols[x]`` the cell column of image column x."""
    width, height = image_size
    h, w = grid
    rows = np.minimum(h - 1, ((np.arange(height) + 0.5) * h / height).astype(np.int64))
    cols = np.minimum(w - 1, ((np.arange(width) + 0.5) * w / width).astype(np.int64))
    return rows, cols


def grid_to_image(values: np.ndarray, image_size: tuple[int, int]) -> np.ndarray:
    """A (h, w) map on the feature grid -> (height, width) on the original image, each
    pixel taking the value of the cell that contains it (the inverse of
    ``feature_cell``: nearest, so no value is invented or smoothed)."""
    rows, cols = cell_index(image_size, values.shape)
    return values[rows[:, None], cols[None, :]]
