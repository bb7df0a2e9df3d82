"""The sigmoid and softmax that end attnviz's attention layers, as modules that also hand
their output to the ``attnviz.capture`` blocks open on the calling thread.

They compute exactly what ``nn.Sigmoid`` and ``nn.Softmax`` compute (they are subclasses
calling the parent's ``forward``) and are still submodules, so a forward hook on them sees
the same tensor as before. What they add: while a capture is open on this thread, they
call its listener with their output, the tensor that multiplies the features. A capture
then needs no forward hook on them: a hooked module leaves PyTorch's fast call path, and
attaching and removing hooks on every analysed image adds up (docs/benchmarks.md).
Nothing is reported while ``torch.compile`` traces a model (training): the check is
constant there and the traced graph is the parent's.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import torch
from torch import nn

Listener = Callable[[nn.Module, torch.Tensor], None]

_local = threading.local()  # .listeners: the listeners open on this thread, in order


@contextmanager
def listening(listener: Listener) -> Iterator[None]:
    """Call ``listener(module, output)`` for every reporting gate's forward run by this
    thread inside the ``with`` block; removed on exit, also when the block raises."""
    listeners = _local.__dict__.setdefault("listeners", [])
    listeners.append(listener)
    try:
        yield
    finally:
        listeners.remove(listener)


class ReportingGate(nn.Module):
    """Mixin: ``_report(out)`` hands ``out`` to this thread's listeners and returns it."""

    def _report(self, out: torch.Tensor) -> torch.Tensor:
        if not torch.compiler.is_compiling():
            for listener in getattr(_local, "listeners", ()):
                listener(self, out)
        return out


class Sigmoid(ReportingGate, nn.Sigmoid):
    """``nn.Sigmoid`` that reports its output (the gate in 0..1) to open captures."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self._report(super().forward(x))


class Softmax(ReportingGate, nn.Softmax):
    """``nn.Softmax`` that reports its output (rows summing to 1) to open captures."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self._report(super().forward(x))
