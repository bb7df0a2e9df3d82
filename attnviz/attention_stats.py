"""The self-attention figures of ``attention_quality`` over many images: a folder analysed
image by image (``measure``, the CLI's ``attention-stats``), or a decoded data set in
batches (``measure_batches``, training's report)."""

from __future__ import annotations

from collections.abc import Callable, Iterable

import torch
from torch import nn

from .analysis import analyze, axial_layers
from .attention_quality import AttentionQuality, step_rows
from .capture import capture
from .image import ImageError, ImageSource, normalize
from .layers.axial import compose


def _image_rows(maps, j: int) -> dict[str, torch.Tensor]:
    """``attention_rows`` of image ``j`` of a ``capture``'s batch: path -> (heads, queries,
    keys). Composed one image at a time: a batch of 56x56 composed maps would be GBs."""
    rows = {path: t[j] for path, t in maps.of_kind("self_attn").items()}
    for layer, (height, width) in axial_layers(maps).items():
        rows[layer] = compose(height[j], width[j])
    for kind in ("axial_height", "axial_width"):
        rows.update({path: step_rows(t[j]) for path, t in maps.of_kind(kind).items()})
    return rows


def measure(images: Iterable[ImageSource], model: nn.Module, *, size: int | None = None,
            on_error: Callable[[ImageSource, Exception], None] | None = None) -> AttentionQuality:
    """The figures of ``model``'s self-attention (axial steps and composed maps
    included, ``attention_rows``) over ``images``, each analysed as ``attnviz.analyze`` does
    (squashed to ``size``, default the model's). An unreadable image goes
    to ``on_error`` and is skipped (without it, its ``ImageError`` is raised)."""
    meter = AttentionQuality()
    for source in images:
        try:
            a = analyze(source, model, size)
        except ImageError as exc:
            if on_error is None:
                raise
            on_error(source, exc)
            continue
        if not a.self_attn:
            raise ValueError(f"{a.model_name} has no self-attention layer")
        meter.add(a.attention_rows())
    return meter


@torch.inference_mode()
def measure_batches(model: nn.Module, images: torch.Tensor, mean, std, batch_size: int = 32) -> AttentionQuality:
    """The figures over a decoded folder: (N, 3, S, S) uint8 images already squashed to
    the input size, as ``analyze`` would prepare them, run in batches (one capture per
    batch, so that only one batch's attention matrices are held at a time)."""
    meter = AttentionQuality()
    for i in range(0, len(images), batch_size):
        with capture(model) as maps:
            model(normalize(images[i : i + batch_size], mean, std))
        if not any(maps.of_kind(kind) for kind in ("self_attn", "axial_height")):
            raise ValueError("the model has no self-attention layer")
        for j in range(min(batch_size, len(images) - i)):
            meter.add(_image_rows(maps, j))
    return meter
