"""CBAM: channel attention, then spatial attention.

Woo, Park, Lee, Kweon, "CBAM: Convolutional Block Attention Module", ECCV 2018,
https://arxiv.org/abs/1807.06521

Channel module: SE with two squeezes, average pool and max pool, passed through ONE
shared two-layer MLP (C -> C/r -> C), summed, sigmoid (``shared=False``: one MLP each,
for ``cbam_unshared_resnet18``). Spatial module: pool over
channels (max and mean), stack the two maps, 7x7 conv to one channel, sigmoid: an
H x W map in 0..1 that multiplies every channel. As in the authors' code
(github.com/Jongchan/attention-module) the 7x7 conv is followed by a BatchNorm before
the sigmoid. Each sigmoid is the submodule ``gate`` so that a forward hook on
``cbam.channel.gate`` / ``cbam.spatial.gate`` sees exactly what multiplies the features.

The max poolings are ``adaptive_max_pool2d`` and ``max(1)``: their gradient goes to the
one element each picked. ``amax`` shares it among ties instead, which costs a full-size
comparison in the backward, and compiled for training (``attnviz/training/compiled.py``) it gave
NaN gradients in the second step of a small test training (cause not found).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

from .gate import Sigmoid
from .se import reduced_channels


def _mlp(channels: int, rd: int, act_layer: Callable[[], nn.Module]) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(channels, rd, kernel_size=1), act_layer(), nn.Conv2d(rd, channels, kernel_size=1))


class ChannelGate(nn.Module):
    """``x * sigmoid(mlp(avg_hw(x)) + mlp(max_hw(x)))`` with one shared MLP, the paper's
    choice; ``shared=False``: ``mlp_avg`` for the average descriptor and ``mlp_max`` for the
    max descriptor, otherwise the same (the variant the paper argues against)."""

    def __init__(
        self,
        channels: int,
        reduction: int = 16,
        *,
        shared: bool = True,
        act_layer: Callable[[], nn.Module] = nn.ReLU,
        gate_layer: Callable[[], nn.Module] = Sigmoid,
    ) -> None:
        super().__init__()
        rd = reduced_channels(channels, reduction)
        self.shared = shared
        if shared:
            self.mlp = _mlp(channels, rd, act_layer)
        else:
            self.mlp_avg = _mlp(channels, rd, act_layer)
            self.mlp_max = _mlp(channels, rd, act_layer)
        self.gate = gate_layer()

    def branches(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The two terms the gate's sigmoid sums: the MLP of the average descriptor and
        that of the max descriptor, each (B, C, 1, 1), before the sigmoid."""
        avg, mx = F.adaptive_avg_pool2d(x, 1), F.adaptive_max_pool2d(x, 1)
        if not self.shared:
            return self.mlp_avg(avg), self.mlp_max(mx)
        both = self.mlp(torch.cat((avg, mx)))  # both squeezes through the shared MLP in one call: 2B, C, 1, 1
        return both[: len(x)], both[len(x):]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        avg, mx = self.branches(x)
        return x * self.gate(avg + mx)  # B, C, 1, 1 in 0..1


class SpatialGate(nn.Module):
    """``x * sigmoid(bn(conv_kxk([max_c(x), mean_c(x)])))``: one weight per position."""

    def __init__(
        self,
        kernel_size: int = 7,
        *,
        gate_layer: Callable[[], nn.Module] = Sigmoid,
    ) -> None:
        super().__init__()
        if kernel_size % 2 != 1:
            raise ValueError(f"kernel_size must be odd to keep H x W, got {kernel_size}")
        self.conv = nn.Conv2d(2, 1, kernel_size, padding=kernel_size // 2, bias=False)
        self.bn = nn.BatchNorm2d(1)
        self.gate = gate_layer()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pooled = torch.cat((x.max(1, keepdim=True).values, x.mean(1, keepdim=True)), dim=1)  # B, 2, H, W
        g = self.gate(self.bn(self.conv(pooled)))  # B, 1, H, W in 0..1
        return x * g


class CBAM(nn.Module):
    """Channel gate then spatial gate, applied in sequence as in the paper."""

    def __init__(
        self,
        channels: int,
        reduction: int = 16,
        *,
        kernel_size: int = 7,
        shared: bool = True,
        act_layer: Callable[[], nn.Module] = nn.ReLU,
        gate_layer: Callable[[], nn.Module] = Sigmoid,
    ) -> None:
        super().__init__()
        self.channel = ChannelGate(channels, reduction, shared=shared, act_layer=act_layer, gate_layer=gate_layer)
        self.spatial = SpatialGate(kernel_size, gate_layer=gate_layer)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.spatial(self.channel(x))
