"""Rows 1-3, in this process: capture overhead, analysis cost and query cost, each as a
ratio to a bare forward pass of the same model timed right next to it."""

from __future__ import annotations

import random

import torch
from torch import nn

import attnviz
from attnviz.image import load_image, prepare

from .report import Row
from .timing import paired

INPUT_SIZE = 224


def bare_input(model: nn.Module, image: bytes, size: int = INPUT_SIZE) -> torch.Tensor:
    """(1, 3, size, size): the image as the model sees it, prepared by the package."""
    meta = model.attnviz_meta
    return prepare(load_image(image), size, meta.mean, meta.std)


def capture_overhead(name: str, model: nn.Module, x: torch.Tensor, reps: int) -> Row:
    """Row 1: a forward pass inside ``attnviz.capture`` (hooks attached and removed
    included) ÷ a bare forward pass, both under ``torch.inference_mode``."""

    def captured() -> None:
        with attnviz.capture(model):
            model(x)

    with torch.inference_mode():
        p = paired(lambda: model(x), captured, reps)
    return Row(1, f"capture overhead, {name}", p.ratio, "ratio", 1.05,
               f"forward inside capture() ÷ bare forward, {x.shape[-1]} px, inference_mode; "
               f"bare {p.base_ms:.0f} ms; {reps} interleaved pairs", p.ratios)


def analysis_cost(name: str, model: nn.Module, image: bytes, x: torch.Tensor, reps: int) -> Row:
    """Row 2: ``attnviz.analyze`` of the encoded image (decode, squash, normalise,
    forward, capture, unpack) ÷ a bare forward pass of the prepared tensor."""

    def bare() -> None:
        with torch.inference_mode():
            model(x)

    p = paired(bare, lambda: attnviz.analyze(image, model, size=x.shape[-1]), reps)
    return Row(2, f"analysis cost, {name}", p.ratio, "ratio", 1.3,
               f"analyze(JPEG bytes, {len(image) // 1000} kB) ÷ bare forward of the {x.shape[-1]} px tensor; "
               f"bare {p.base_ms:.0f} ms; {reps} interleaved pairs", p.ratios)


def query_cost(name: str, model: nn.Module, image: bytes, x: torch.Tensor, reps: int, seed: int = 0) -> Row | None:
    """Row 3: ``Analysis.query`` at a new random pixel of a random self-attention layer
    ÷ a bare forward pass; ``None`` for a model without self-attention."""
    a = attnviz.analyze(image, model, size=x.shape[-1])
    if not a.self_attn:
        return None
    rng = random.Random(seed)
    width, height = a.image_size
    layers = list(a.self_attn)
    queries = iter([(rng.choice(layers), rng.uniform(0, width - 1), rng.uniform(0, height - 1))
                    for _ in range(reps + 2)])  # + the warm-up calls

    def bare() -> None:
        with torch.inference_mode():
            model(x)

    p = paired(bare, lambda: a.query(*next(queries)), reps)
    return Row(3, f"query cost, {name}", p.ratio, "ratio", 0.02,
               f"Analysis.query(random layer of {len(layers)}, random pixel) ÷ bare forward; "
               f"query {p.ratio * p.base_ms * 1000:.0f} µs; {reps} interleaved pairs", p.ratios)


def compute_rows(names: list[str], image: bytes, reps: int) -> list[Row]:
    """Rows 1, 2 and 3 for every model in ``names``, measured on ``image``."""
    rows: dict[int, list[Row]] = {1: [], 2: [], 3: []}
    for name in names:
        model = attnviz.load_model(name)
        x = bare_input(model, image)
        rows[1].append(capture_overhead(name, model, x, reps))
        rows[2].append(analysis_cost(name, model, image, x, reps))
        query = query_cost(name, model, image, x, reps * 3)
        if query is not None:
            rows[3].append(query)
    return [*rows[1], *rows[2], *rows[3]]
