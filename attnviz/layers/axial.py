"""Multi-head axial attention on a feature map: attention along each column (the height
step), then along each row (the width step).

Ho et al., "Axial Attention in Multidimensional Transformers", 2019,
https://arxiv.org/abs/1912.12180, and Wang et al., "Axial-DeepLab: Stand-Alone
Axial-Attention for Panoptic Segmentation", ECCV 2020, https://arxiv.org/abs/2003.07853
(an axial-attention layer: a height-axis layer followed by a width-axis layer, each
multi-head self-attention along one axis).

The feature map (B, C, H, W) has, for each head, in the height step one attention per
column c, over that column's H positions, and in the width step one per row r, over that
row's W positions:

    A_height[c] = softmax(tau cos(q_r, k_r') - slope |r - r'|)   # B, heads, W, H, H
    A_width[r]  = softmax(tau cos(q_c, k_c') - slope |c - c'|)   # B, heads, H, W, W

each with its own q, k, v (1x1 convolutions, ``num_heads`` heads of C / num_heads
channels). The width step runs on the height step's output, so after both steps the
query (r, c) has drawn on every position (r', c') through the cell (r, c'):

    M[(r, c), (r', c')] = A_width[r](c, c') * A_height[c'](r, r')     # per head

a full-image map whose rows sum to 1 (``compose``), at H*W*(H+W) weights instead of
(H*W)^2. The joined heads are projected back to C by a 1x1 conv + BatchNorm and added to
the input (a residual), as in ``SelfAttention2d``.

Departures from the papers:

- **Logits as in attnviz's full self-attention layer** (``self_attention.py``, where the
  reasons are given): cosine content logits with a learned temperature per head (Swin V2)
  and a fixed distance penalty per head, here 1-D (|r - r'| cells, the same slopes from 1
  to 1/4), instead of q.k / sqrt(d) plus Axial-DeepLab's learned relative-position
  embeddings for q, k and v (which have a fixed span, 2 x 56 + 1 in the paper's stand-alone
  models; the penalty has none, so the layer runs at any input size).
- **The width step's values keep each head apart** (a grouped 1x1 convolution, one d x d
  matrix per head) and nothing non-linear sits between the two steps (the paper has a
  BatchNorm after each). Then head h of the output is exactly M_h applied to head h of the
  height step's values, followed by linear maps, so the composed map ``compose`` returns is
  what the layer computes, not an approximation. The width step's q and k see all
  channels of the height step's output, as in the paper.
- One axial layer on a residual branch of a ResNet block (the placement is in
  ``attnviz.models``), not Axial-DeepLab's stand-alone bottleneck that replaces the 3x3
  convolution, nor the Axial Transformer's stack of masked layers for generation.
- The output BatchNorm's scale starts at zero: at initialisation the layer is the identity.

Each step's softmax is its own submodule, ``height.softmax`` and ``width.softmax``: a
forward hook (or ``attnviz.capture``) sees (B, heads, W, H, H) and (B, heads, H, W, W),
every row summing to 1.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from .gate import Softmax
from .self_attention import distance_slopes, temperature

AXES = ("height", "width")


def line_distances(n: int, device: torch.device | None = None) -> torch.Tensor:
    """(n, n) distances |i - j| between the cells of one line of n cells."""
    pos = torch.arange(n, device=device, dtype=torch.float32)
    return (pos[:, None] - pos[None, :]).abs()


class AxialStep(nn.Module):
    """Multi-head attention along one axis of a (B, C, H, W) map, without residual:
    returns ``softmax(tau cos(q, k) - slope |i - j|) v`` along ``axis``, (B, C, H, W).

    ``value_groups``: groups of the value convolution (1: every channel feeds every head;
    ``num_heads``: each head's values come from that head's channels only)."""

    def __init__(self, channels: int, num_heads: int, axis: str, *, value_groups: int = 1) -> None:
        super().__init__()
        if axis not in AXES:
            raise ValueError(f"axis must be one of {AXES}, got {axis!r}")
        if channels % num_heads:
            raise ValueError(f"channels ({channels}) must be divisible by num_heads ({num_heads})")
        self.axis = axis
        self.num_heads = num_heads
        self.head_dim = channels // num_heads
        self.q = nn.Conv2d(channels, channels, kernel_size=1, bias=False)
        self.k = nn.Conv2d(channels, channels, kernel_size=1, bias=False)
        self.v = nn.Conv2d(channels, channels, kernel_size=1, bias=False, groups=value_groups)
        self.logit_scale = nn.Parameter(torch.full((num_heads,), math.log(10.0)))
        self.register_buffer("slope", distance_slopes(num_heads))
        self.softmax = Softmax(dim=-1)

    def temperature(self) -> torch.Tensor:
        """(heads,) the scale of each head's cosine logits, in (0, 100]."""
        return temperature(self.logit_scale)

    def position_logits(self, n: int) -> torch.Tensor:
        """(heads, 1, n, n) the position term: -slope * |i - j| along a line of n cells."""
        return -self.slope.view(-1, 1, 1, 1) * line_distances(n, self.slope.device)

    def _lines(self, t: torch.Tensor) -> torch.Tensor:
        b, c, h, w = t.shape
        t = t.reshape(b, self.num_heads, self.head_dim, h, w)
        # height: B, heads, W (one line per column), H, d; width: B, heads, H (per row), W, d
        return t.permute(0, 1, 4, 3, 2) if self.axis == "height" else t.permute(0, 1, 3, 4, 2)

    def _unlines(self, t: torch.Tensor, h: int, w: int) -> torch.Tensor:
        b = t.shape[0]
        t = t.permute(0, 1, 4, 3, 2) if self.axis == "height" else t.permute(0, 1, 4, 2, 3)  # B, heads, d, H, W
        return t.reshape(b, self.num_heads * self.head_dim, h, w)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.shape
        q = F.normalize(self._lines(self.q(x)), dim=-1, eps=1e-6)
        k = F.normalize(self._lines(self.k(x)), dim=-1, eps=1e-6)
        v = self._lines(self.v(x))
        tau = self.temperature().view(1, -1, 1, 1, 1).to(q.dtype)
        n = h if self.axis == "height" else w
        logits = (q * tau) @ k.transpose(-1, -2) + self.position_logits(n).to(q.dtype)  # B, heads, lines, n, n
        attn = self.softmax(logits)
        return self._unlines(attn @ v, h, w)


class AxialAttention2d(nn.Module):
    """``x + bn(proj(width(height(x))))``: a height step then a width step, each
    multi-head axial attention (``AxialStep``), with the constructor of ``SelfAttention2d``."""

    def __init__(self, channels: int, num_heads: int = 4) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.height = AxialStep(channels, num_heads, "height")
        # grouped values: head h of the width step reads head h of the height step only
        self.width = AxialStep(channels, num_heads, "width", value_groups=num_heads)
        self.proj = nn.Conv2d(channels, channels, kernel_size=1, bias=False)
        self.bn = nn.BatchNorm2d(channels)
        nn.init.zeros_(self.bn.weight)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.bn(self.proj(self.width(self.height(x))))


def compose(height: torch.Tensor, width: torch.Tensor) -> torch.Tensor:
    """The two steps' weights as one map per head: (..., heads, N, N), N = H*W row-major
    (token = row * W + col), rows summing to 1, from the height step's (..., heads, W, H, H)
    and the width step's (..., heads, H, W, W):

        M[(r, c), (r', c')] = A_width[r](c, c') * A_height[c'](r, r')

    how much position (r', c') contributes to the query (r, c) after both steps. Every
    entry is positive in exact arithmetic (in float32 a product of two very small weights
    may round to 0)."""
    *lead, w, h, _ = height.shape
    if tuple(width.shape[-3:]) != (h, w, w) or width.shape[:-3] != height.shape[:-3]:
        raise ValueError(f"height step {tuple(height.shape)} and width step {tuple(width.shape)} "
                         "are not the two steps of one layer")
    # [..., r, c, c'] * [..., c', r, r'] -> [..., r, c, r', c']; the height step made contiguous
    # as [..., r, r', c'] first (N*H values), so that the N*N product is one streaming pass
    m = width.unsqueeze(-2) * height.permute(*range(len(lead)), -2, -1, -3).contiguous().unsqueeze(-3)
    return m.reshape(*lead, h * w, h * w)
