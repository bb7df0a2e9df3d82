"""CBAM compiled while training (``torch.compile``; inductor writes C++ for the CPU).

CBAM's gates are a chain of passes over whole feature maps that do almost no
arithmetic: two poolings over H x W, a product, two poolings over channels, another
product; eager autograd adds a full-size gradient for each pooling and sums them.
Compiled, the chain becomes a few fused loops. Compiling SE's gate or the
self-attention layer (whose time is matrix products and a softmax) changed nothing,
so only CBAM is compiled. Step times, measured: docs/training.md, "CBAM compiled".

Training only: inference (the app, ``evaluate``, ``profile``) runs the same modules
eagerly. Where no C++ compiler is found, training runs eagerly too.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from contextlib import contextmanager

import torch
from torch import nn

from ..layers import CBAM, AxialAttention2d

COMPILED_IN_TRAINING: tuple[type[nn.Module], ...] = (CBAM, AxialAttention2d)


def compiler_available() -> bool:
    """Whether inductor's C++ compiler (``$CXX``, else ``g++``) is on the PATH."""
    return shutil.which(os.environ.get("CXX", "g++")) is not None


@contextmanager
def compiled(model: nn.Module, types: tuple[type[nn.Module], ...] = COMPILED_IN_TRAINING) -> Iterator[list[str]]:
    """Inside the block, every submodule of ``model`` of one of ``types`` runs compiled,
    with dynamic shapes (one compilation serves every crop size); yields their names,
    none where no compiler is found. On exit they run eagerly again; compiled code
    stays cached for the next block."""
    names = [n for n, m in model.named_modules() if isinstance(m, types)] if compiler_available() else []
    for name in names:
        module = model.get_submodule(name)
        module.forward = torch.compile(module.forward, dynamic=not isinstance(module, AxialAttention2d))
    try:
        # Each stage's modules (their own channel counts) and new crop sizes compile
        # anew: 8 graphs by 160 px, dynamo's default limit, past which it runs eagerly.
        with torch._dynamo.config.patch(recompile_limit=64):
            yield names
    finally:
        for name in names:
            del model.get_submodule(name).forward  # the class's forward again
