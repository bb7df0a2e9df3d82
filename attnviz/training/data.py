"""Training data: an ImageFolder directory decoded once into a uint8 tensor, and
augmentations applied to whole batches of tensors (no per-image Python work)."""

from __future__ import annotations

import hashlib
import math
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from tqdm import tqdm

from ..image import IMAGE_SUFFIXES, load_image, squash, to_uint8_tensor


@dataclass
class DecodedFolder:
    """(N, 3, size, size) uint8 images, (N,) int64 labels, and the class folder names."""

    images: torch.Tensor
    labels: torch.Tensor
    classes: list[str]


def list_image_folder(root: Path) -> tuple[list[Path], list[int], list[str]]:
    """Files and labels of an ``ImageFolder`` layout: ``root/<class>/<image>``."""
    root = Path(root)
    classes = sorted(d.name for d in root.iterdir() if d.is_dir())
    if not classes:
        raise ValueError(f"{root}: no class folders (expected root/<class>/<image>)")
    files, labels = [], []
    for i, c in enumerate(classes):
        for f in sorted((root / c).iterdir()):
            if f.suffix.lower() in IMAGE_SUFFIXES:
                files.append(f)
                labels.append(i)
    if not files:
        raise ValueError(f"{root}: no images found")
    return files, labels, classes


def _decode(args: tuple[str, int]) -> torch.Tensor:
    path, size = args
    return to_uint8_tensor(squash(load_image(path), size))


def decode_folder(root: Path, size: int, cache_dir: Path | None = None, workers: int = 2) -> DecodedFolder:
    """Decode every image of ``root`` once, through the same loading and squashing the
    app uses, into memory; cached in ``cache_dir`` keyed by the file list and size."""
    files, labels, classes = list_image_folder(root)
    key = hashlib.sha256(f"{size}\n".encode() + "\n".join(map(str, files)).encode()).hexdigest()[:16]
    cache = Path(cache_dir) / f"{Path(root).name}-{size}-{key}.pt" if cache_dir else None
    if cache is not None and cache.is_file():
        blob = torch.load(cache, weights_only=True)
        return DecodedFolder(blob["images"], blob["labels"], classes)
    jobs = [(str(f), size) for f in files]
    if workers > 1:
        with ThreadPoolExecutor(workers) as pool:  # PIL decodes without the GIL
            imgs = list(tqdm(pool.map(_decode, jobs), total=len(jobs), desc=f"decode {Path(root).name}"))
    else:
        imgs = [_decode(j) for j in tqdm(jobs, desc=f"decode {Path(root).name}")]
    out = DecodedFolder(torch.stack(imgs), torch.tensor(labels, dtype=torch.int64), classes)
    if cache is not None:
        cache.parent.mkdir(parents=True, exist_ok=True)
        tmp = cache.with_suffix(".tmp")
        torch.save({"images": out.images, "labels": out.labels}, tmp)
        tmp.replace(cache)
    return out


def source_for_crops(images: torch.Tensor, out_size: int, chunk: int = 512) -> torch.Tensor:
    """The uint8 images downscaled (antialiased) to about the scale that crops of
    ``out_size`` sample them at (crops average ~0.7 of the side), so that
    ``grid_sample`` does not alias. Done once per crop size, not per batch."""
    h = images.shape[-1]
    src = min(h, math.ceil(out_size * 1.4))
    if src == h:
        return images
    parts = [
        F.interpolate(images[i : i + chunk].float(), size=(src, src), mode="bilinear", antialias=True)
        .round_()
        .clamp_(0, 255)
        .to(torch.uint8)
        for i in range(0, len(images), chunk)
    ]
    return torch.cat(parts)


def random_resized_crop_flip(
    images: torch.Tensor,
    out_size: int,
    generator: torch.Generator,
    scale: tuple[float, float] = (0.25, 1.0),
    ratio: tuple[float, float] = (3 / 4, 4 / 3),
) -> torch.Tensor:
    """Per-image random-resized crop and horizontal flip of a uint8 batch, in one
    ``grid_sample``. Returns float (B, 3, out_size, out_size) in 0..255."""
    b = images.shape[0]
    x = images.float()
    area = torch.empty(b).uniform_(*scale, generator=generator)
    log_r = torch.empty(b).uniform_(math.log(ratio[0]), math.log(ratio[1]), generator=generator)
    r = log_r.exp()
    cw = (area * r).sqrt().clamp(max=1.0)  # crop width as a fraction of the side
    ch = (area / r).sqrt().clamp(max=1.0)
    cx = (torch.rand(b, generator=generator) * 2 - 1) * (1 - cw)
    cy = (torch.rand(b, generator=generator) * 2 - 1) * (1 - ch)
    flip = torch.where(torch.rand(b, generator=generator) < 0.5, -1.0, 1.0)
    grid = crop_grid(cw * flip, cx, ch, cy, out_size)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="reflection", align_corners=False)


def crop_grid(sx: torch.Tensor, tx: torch.Tensor, sy: torch.Tensor, ty: torch.Tensor, size: int) -> torch.Tensor:
    """``F.affine_grid`` (``align_corners=False``) for the axis-aligned transforms
    ``x' = sx x + tx``, ``y' = sy y + ty``, one per image: (B, size, size, 2), equal to
    it bit for bit (a test checks) and much faster (docs/training.md, "Data
    preparation"). affine_grid multiplies every output position's (x, y, 1) by a 3 x 2
    matrix in a batched matmul; here the zeros of those matrices are never multiplied."""
    b = sx.shape[0]
    base = torch.linspace(-1, 1, size) * (size - 1) / size  # affine_grid's pixel centres
    gx = base.view(1, 1, size) * sx.view(b, 1, 1) + tx.view(b, 1, 1)
    gy = base.view(1, size, 1) * sy.view(b, 1, 1) + ty.view(b, 1, 1)
    return torch.stack((gx.expand(b, size, size), gy.expand(b, size, size)), dim=-1)


def random_flip(images: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Each image of a uint8 batch mirrored left-right with probability 1/2; float 0..255."""
    x = images.float()
    flip = torch.rand(len(x), generator=generator) < 0.5
    x[flip] = x[flip].flip(-1)
    return x
