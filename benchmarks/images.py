"""Many different photos from the few bundled samples: crops and flips, saved as PNG."""

from __future__ import annotations

import random
from pathlib import Path

from PIL import Image, ImageOps

from attnviz.app.service import sample_images


def default_sample() -> Path:
    """The sample the app shows first (the first entry of its sample list)."""
    return next(iter(sample_images().values()))


def variants(n: int, directory: Path, seed: int = 0) -> list[Path]:
    """``n`` distinct images: each a random crop (60-100 % of each side) of a bundled
    sample, mirrored at random, written as ``NNN_<sample>.png`` in ``directory``."""
    directory.mkdir(parents=True, exist_ok=True)
    samples = list(sample_images().values())
    rng = random.Random(seed)
    seen: set[tuple] = set()
    paths = []
    while len(paths) < n:
        src = samples[len(paths) % len(samples)]
        with Image.open(src) as im:
            im = ImageOps.exif_transpose(im).convert("RGB")
            w, h = round(im.width * rng.uniform(0.6, 1.0)), round(im.height * rng.uniform(0.6, 1.0))
            left, top = rng.randint(0, im.width - w), rng.randint(0, im.height - h)
            flip = rng.random() < 0.5
            key = (src.name, left, top, w, h, flip)
            if key in seen:
                continue
            seen.add(key)
            out = im.crop((left, top, left + w, top + h))
            if flip:
                out = ImageOps.mirror(out)
            path = directory / f"{len(paths):03d}_{src.stem}.png"
            out.save(path, "PNG")
            paths.append(path)
    return paths
