"""docs/img/sa_before_after.png: the same image and query pixels, two self-attention
models side by side, every panel drawn by today's ``figures.query_panel``.

Each model's attention comes from the NPZ that ``attnviz explain --no-png`` writes
(its code and weights at that commit), so a model whose layer code has changed since can
still be drawn:

    git worktree add /tmp/before b6d0cb7   # the last commit with the previous sa_resnet18
    (cd /tmp/before && python -m attnviz explain attnviz/samples/cat.jpg --model sa_resnet18 \\
        --no-png --out /tmp/before/out)
    python -m attnviz explain attnviz/samples/cat.jpg --model sa_resnet18 --no-png --out /tmp/after
    python docs/make_before_after.py attnviz/samples/cat.jpg /tmp/before/out/cat.npz /tmp/after/cat.npz \\
        --query 170,115 --query 420,200
"""

from __future__ import annotations

import argparse
import io
import tempfile
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageDraw

from attnviz import figures
from attnviz.attention_quality import head_quality
from attnviz.explain import write_pngs
from attnviz.image import display_image, feature_cell, load_image

PANEL_WIDTH = 800


def panels(image: Image.Image, npz: Path, queries: list[tuple[float, float]], title: str) -> list[Image.Image]:
    """One query_panel PNG per (query, layer), in that order."""
    figs = {}
    with np.load(npz) as z:
        layers = sorted(k for k in z.files if k.startswith("self_attn/"))
        attn = {k.split("/", 1)[1]: torch.from_numpy(z[k]) for k in layers}
    for qi, (x, y) in enumerate(queries):
        for layer, a in attn.items():
            side = int(round(a.shape[-1] ** 0.5))
            row, col = feature_cell(x, y, image.size, (side, side))
            maps = a[:, row * side + col].reshape(-1, side, side)
            fig = figures.query_panel(display_image(image), maps, (x, y), layer, colorscale="Viridis",
                                      extent=image.size, quality=head_quality(a), width_px=PANEL_WIDTH)
            fig.update_layout(title=f"{title}: {figures.short_name(layer)}, query ({x:.0f}, {y:.0f})")
            figs[f"q{qi}_{figures.short_name(layer)}"] = fig
    with tempfile.TemporaryDirectory() as tmp:
        paths = write_pngs(figs, Path(tmp), "panel", width=PANEL_WIDTH)
        return [Image.open(io.BytesIO(p.read_bytes())).convert("RGB") for p in paths]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("image")
    p.add_argument("before", type=Path, help="NPZ of the previous model")
    p.add_argument("after", type=Path, help="NPZ of the new model")
    p.add_argument("--query", action="append", required=True, help="X,Y pixel of the image (repeat)")
    p.add_argument("--out", type=Path, default=Path(__file__).parent / "img" / "sa_before_after.png")
    args = p.parse_args()
    image = load_image(args.image)
    queries = [tuple(float(v) for v in q.split(",")) for q in args.query]
    before = panels(image, args.before, queries, "before")
    after = panels(image, args.after, queries, "after")
    w, h = before[0].size
    sheet = Image.new("RGB", (2 * w, len(before) * h), "white")
    for i, (b, a) in enumerate(zip(before, after)):
        sheet.paste(b, (0, i * h))
        sheet.paste(a, (w, i * h))
    ImageDraw.Draw(sheet).line([(w, 0), (w, sheet.height)], fill="black", width=2)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    sheet.save(args.out, optimize=True)
    print(args.out, sheet.size)


if __name__ == "__main__":
    main()
