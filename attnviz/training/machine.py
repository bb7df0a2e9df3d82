"""The machine training runs on: its CPU, whether it computes bf16 natively, which
precision the recipe therefore trains in, and the reference epoch that says how fast the
machine is (docs/training.md, "Machines").

On a CPU with native bf16 (``avx512_bf16`` or AMX) bf16 autocast roughly halves a
step; on one without (AVX2 only) PyTorch emulates it and a step is about ten times
slower than in fp32. So the precision is chosen per machine, at the start of a run,
and recorded in the weights' metadata with the CPU model.
"""

from __future__ import annotations

import platform
import time
from contextlib import AbstractContextManager, nullcontext
from pathlib import Path

import torch

CPUINFO = Path("/proc/cpuinfo")
NATIVE_BF16_FLAGS = ("avx512_bf16", "amx_bf16")
PRECISIONS = ("auto", "bf16", "fp32")


def _cpuinfo_field(name: str, cpuinfo: str) -> str | None:
    for line in cpuinfo.splitlines():
        key, _, value = line.partition(":")
        if key.strip() == name:
            return value.strip()
    return None


def _read_cpuinfo() -> str:
    try:
        return CPUINFO.read_text()
    except OSError:
        return ""


def cpu_model(cpuinfo: str | None = None) -> str:
    """The CPU's model name (``/proc/cpuinfo``), or what ``platform`` knows."""
    text = _read_cpuinfo() if cpuinfo is None else cpuinfo
    return _cpuinfo_field("model name", text) or platform.processor() or platform.machine() or "unknown"


def cpu_flags(cpuinfo: str | None = None) -> set[str]:
    text = _read_cpuinfo() if cpuinfo is None else cpuinfo
    return set((_cpuinfo_field("flags", text) or "").split())


def native_bf16(cpuinfo: str | None = None) -> bool:
    """Whether the CPU computes bf16 natively (AVX-512 BF16 or AMX)."""
    return any(flag in cpu_flags(cpuinfo) for flag in NATIVE_BF16_FLAGS)


def choose_precision(requested: str = "auto", cpuinfo: str | None = None) -> str:
    """``bf16`` or ``fp32``: ``auto`` takes bf16 only where the CPU has it natively."""
    if requested not in PRECISIONS:
        raise ValueError(f"precision {requested!r}: expected one of {', '.join(PRECISIONS)}")
    if requested != "auto":
        return requested
    return "bf16" if native_bf16(cpuinfo) else "fp32"


def autocast(precision: str) -> AbstractContextManager:
    """The forward pass's context for ``precision``: bf16 autocast, or nothing."""
    if precision == "bf16":
        return torch.autocast("cpu", dtype=torch.bfloat16)
    return nullcontext()


def describe() -> dict:
    """What a weights file records about the machine that trained it."""
    return {"cpu": cpu_model(), "native_bf16": native_bf16(), "torch_threads": torch.get_num_threads()}


def reference_epoch(images: torch.Tensor, labels: torch.Tensor, precision: str, epochs: int = 2,
                    num_classes: int = 10) -> list[float]:
    """Seconds of the reference epoch, ``epochs`` times: ``resnet18`` at width 32, one
    epoch of ``images`` as random-resized crops at 128 px, batch 64, SGD, channels_last,
    in ``precision``. The first includes warming up; the second is the figure to quote."""
    from ..image import normalize
    from ..models import build_model
    from ..weights import IMAGENET_MEAN, IMAGENET_STD
    from .data import random_resized_crop_flip, source_for_crops

    torch.manual_seed(0)
    model = build_model("resnet18", width=32, num_classes=num_classes).to(memory_format=torch.channels_last)
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, nesterov=True)
    criterion = torch.nn.CrossEntropyLoss()
    source = source_for_crops(images, 128)
    gen = torch.Generator().manual_seed(0)
    times = []
    for _ in range(epochs):
        t0 = time.perf_counter()
        order = torch.randperm(len(labels), generator=gen)
        for i in range(len(labels) // 64):
            idx = order[i * 64 : (i + 1) * 64]
            x = normalize(random_resized_crop_flip(source[idx], 128, gen), IMAGENET_MEAN, IMAGENET_STD,
                          torch.channels_last)
            with autocast(precision):
                logits = model(x)
            loss = criterion(logits.float(), labels[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        times.append(time.perf_counter() - t0)
    return times
