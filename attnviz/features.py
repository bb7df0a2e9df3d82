"""The feature maps an SE or CBAM module gates, for one block: what each channel holds
before its gate and after it.

    f = attnviz.block_features("photo.jpg", model, "layer3.1")
    f.before[c], f.gates[c], f.after_channel[c]   # after_channel = before * gate
    f.rank(c), f.extremes(8)                      # 1 = the largest gate of the block

One forward pass with forward hooks on ONE block's attention module (``….se`` or
``….cbam``, attnviz's own or timm's) and its channel part: the module's input U and
output, and for CBAM the channel part's output; the gates themselves are recorded by
``capture``, as for ``analyze``. As ``capture``'s, the
hooks record only the forward pass of the thread that registered them, never change
it, and are always removed, also when the forward pass raises; the model is not edited.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass

import torch
from torch import nn

from .analysis import model_input
from .capture import ThreadBoundHooks, attention_modules, capture
from .image import ImageSource


@dataclass
class BlockFeatures:
    """What one block's attention module saw and did, batch dimension removed, float32
    on the CPU, copied (a later in-place op cannot change them).

    - ``module``: its path (``layer3.1.se``, ``layer3.1.cbam``); ``kind``: ``se`` or ``cbam``;
    - ``before``: (C, H, W) the module's input U, signed (after a BatchNorm, before the
      residual addition);
    - ``gates``: (C,) the channel gates in 0..1;
    - ``after_channel``: (C, H, W) after the channel gate (= ``before * gates``);
    - ``spatial``: (H, W) CBAM's spatial gate in 0..1 (None for SE);
    - ``after``: (C, H, W) the module's output: ``after_channel`` for SE, times
      ``spatial`` for CBAM.
    """

    module: str
    kind: str
    before: torch.Tensor
    gates: torch.Tensor
    after_channel: torch.Tensor
    after: torch.Tensor
    spatial: torch.Tensor | None = None

    @property
    def block(self) -> str:
        """``layer3.1.se`` -> ``layer3.1``."""
        return self.module.rsplit(".", 1)[0]

    def rank(self, channel: int) -> int:
        """Rank of ``channel``'s gate in its block: 1 = the largest gate, C = the smallest
        (ties keep channel order)."""
        order = torch.argsort(-self.gates, stable=True)
        return int((order == channel).nonzero()[0, 0]) + 1

    def extremes(self, n: int = 8) -> tuple[list[int], list[int]]:
        """(the ``n`` channels with the largest gates, largest first; the ``n`` with the
        smallest, smallest first); ``n`` at most C."""
        order = torch.argsort(-self.gates, stable=True).tolist()
        n = min(n, len(order))
        return order[:n], order[::-1][:n]


def _parent(path: str) -> str:
    return path.rsplit(".", 1)[0]


def _gates(model: nn.Module) -> dict[str, tuple[str, str, str | None]]:
    """Module path -> (kind, channel gate output path, spatial gate output path or None)
    for every SE or CBAM module of ``model``: attnviz's own and timm's (any module whose
    channel gate ``capture`` records). The module is the channel gate's parent for SE
    (``layer3.1.se``) and CBAM's channel part's parent for CBAM (``layer3.1.cbam``)."""
    outputs = attention_modules(model)
    found: dict[str, tuple[str, str, str | None]] = {}
    for path, kind in outputs.items():
        if kind == "se":
            found[_parent(path)] = ("se", path, None)
        elif kind == "cbam_channel":
            module = _parent(_parent(path))
            spatial = next((p for p, k in outputs.items() if k == "cbam_spatial" and p.startswith(module + ".")),
                           None)
            found[module] = ("cbam", path, spatial)
    return found


def gated_modules(model: nn.Module) -> dict[str, str]:
    """Path of every SE or CBAM module in ``model`` -> ``se`` or ``cbam``."""
    return {path: kind for path, (kind, _, _) in _gates(model).items()}


def find_module(model: nn.Module, block: str) -> str:
    """The path of the SE/CBAM module of ``block``: a block (``layer3.1``), the module
    (``layer3.1.se``) or a path under it (``layer3.1.cbam.channel.gate``). A name that
    matches none raises ``KeyError`` listing the blocks there are."""
    found = gated_modules(model)
    for path in found:
        if block == path or block.startswith(path + ".") or path == f"{block}.{path.rsplit('.', 1)[-1]}":
            return path
    blocks = ", ".join(_parent(p) for p in found) or "none"
    raise KeyError(f"no SE or CBAM block {block!r}; blocks with channel gates: {blocks}")


class _tap(ThreadBoundHooks):  # noqa: N801 - used like a function: ``with _tap(modules) as seen``
    """Records (first input, output) of each module in ``modules`` during the forward
    passes of this thread inside the ``with``; hooks always removed on exit."""

    def __init__(self, modules: dict[str, nn.Module]) -> None:
        super().__init__()
        self._modules = modules
        self.seen: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}

    def _hooks(self) -> Iterator[tuple[nn.Module, Callable]]:
        for name, module in self._modules.items():
            yield module, self._hook(name)

    def _hook(self, name: str):
        def hook(module: nn.Module, inputs: tuple, output: torch.Tensor) -> None:
            if self._mine():
                self.seen[name] = (inputs[0].detach().float().cpu().clone(), output.detach().float().cpu().clone())

        return hook

    def __enter__(self) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
        super().__enter__()
        return self.seen


def block_features(image: ImageSource, model: nn.Module | str, block: str, *,
                   size: int | None = None) -> BlockFeatures:
    """Run ``image`` through ``model`` (a module or a model's name), prepared as
    ``analyze`` prepares it, and return the feature maps that ``block``'s SE or CBAM
    module gates (``block`` as ``find_module`` takes it). Raises ``KeyError``/
    ``ValueError``/``ImageError`` with a one-line message for a bad setting."""
    model, _, _, _, _, x = model_input(image, model, size)
    path = find_module(model, block)
    kind, gate, spatial = _gates(model)[path]
    # the channel gate's module multiplies its input by the gates: its input is U, its output U * gates
    channel = _parent(gate)
    parts = {path: model.get_submodule(path), "channel": model.get_submodule(channel)}
    with torch.inference_mode(), _tap(parts) as seen, capture(model, [gate, *([spatial] if spatial else [])]) as maps:
        model(x)
    before, after = (t[0] for t in seen[path])
    gates = maps[gate][0, :, 0, 0]
    if kind == "se":
        return BlockFeatures(path, kind, before, gates, after_channel=after, after=after)
    return BlockFeatures(path, kind, before, gates, after_channel=seen["channel"][1][0], after=after,
                         spatial=maps[spatial][0, 0] if spatial else None)
