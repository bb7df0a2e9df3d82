"""Squeeze-and-Excitation: channel attention.

Hu, Shen, Albanie, Sun, Wu, "Squeeze-and-Excitation Networks", CVPR 2018 / TPAMI 2019,
https://arxiv.org/abs/1709.01507

Squeeze: global average pool of U (B, C, H, W) to C values. Excitation: FC C -> C/r,
ReLU, FC C/r -> C, sigmoid, r = 16. The C gates in 0..1 multiply the channels of U.
The two FC layers are 1x1 convolutions on the pooled (B, C, 1, 1) tensor, which is
the same computation. The sigmoid is the submodule ``gate`` so that a forward hook on
it sees exactly the tensor that multiplies the features.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from .gate import Sigmoid


def reduced_channels(channels: int, reduction: int) -> int:
    """Width of the bottleneck C/r, at least 1 so that tiny models still work."""
    return max(1, channels // reduction)


class SqueezeExcite(nn.Module):
    """SE block: ``x * sigmoid(fc2(relu(fc1(mean_hw(x)))))``."""

    def __init__(
        self,
        channels: int,
        reduction: int = 16,
        *,
        act_layer: Callable[[], nn.Module] = nn.ReLU,
        gate_layer: Callable[[], nn.Module] = Sigmoid,
    ) -> None:
        super().__init__()
        rd = reduced_channels(channels, reduction)
        self.fc1 = nn.Conv2d(channels, rd, kernel_size=1)
        self.act = act_layer()
        self.fc2 = nn.Conv2d(rd, channels, kernel_size=1)
        self.gate = gate_layer()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s = x.mean((2, 3), keepdim=True)  # B, C, 1, 1: the squeeze
        g = self.gate(self.fc2(self.act(self.fc1(s))))  # B, C, 1, 1 in 0..1
        return x * g
