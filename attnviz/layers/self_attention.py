"""Multi-head 2-D self-attention over every position of a feature map.

Vaswani et al., "Attention Is All You Need", NeurIPS 2017, https://arxiv.org/abs/1706.03762
applied to CNN feature maps as in Wang et al., "Non-local Neural Networks", CVPR 2018,
https://arxiv.org/abs/1711.07971 and Zhang et al., "Self-Attention Generative
Adversarial Networks", ICML 2019, https://arxiv.org/abs/1805.08318

The feature map (B, C, H, W) is flattened to N = H*W tokens of C channels. Q, K, V are
1x1 convolutions (learned linear projections), split into ``num_heads`` heads of
d = C / num_heads channels; each head computes softmax(Q K^T / sqrt(d)) V, so every
position attends to every position. The heads are joined, projected back to C by a 1x1
conv + BatchNorm, and added to the input (a residual). The BatchNorm's scale starts at
zero, so at initialisation the layer is the identity, as SAGAN's gamma = 0.

There is no position encoding (as in non-local and SAGAN blocks): the layer runs at any
input size, and the convolutions before it already encode where things are.

The softmax is the submodule ``softmax``: a forward hook on it sees the attention
matrix (B, heads, N, N) whose rows sum to 1, row i being where query position i looks.
"""

from __future__ import annotations

import torch
from torch import nn


class SelfAttention2d(nn.Module):
    """``x + bn(proj(softmax(q k^T / sqrt(d)) v))`` over all H*W positions."""

    def __init__(self, channels: int, num_heads: int = 4) -> None:
        super().__init__()
        if channels % num_heads:
            raise ValueError(f"channels ({channels}) must be divisible by num_heads ({num_heads})")
        self.num_heads = num_heads
        self.head_dim = channels // num_heads
        self.scale = self.head_dim**-0.5
        self.q = nn.Conv2d(channels, channels, kernel_size=1, bias=False)
        self.k = nn.Conv2d(channels, channels, kernel_size=1, bias=False)
        self.v = nn.Conv2d(channels, channels, kernel_size=1, bias=False)
        self.softmax = nn.Softmax(dim=-1)
        self.proj = nn.Conv2d(channels, channels, kernel_size=1, bias=False)
        self.bn = nn.BatchNorm2d(channels)
        nn.init.zeros_(self.bn.weight)

    def _heads(self, t: torch.Tensor) -> torch.Tensor:
        b, c, h, w = t.shape
        # B, C, H, W -> B, heads, N, d (a view when t is channels_last)
        return t.permute(0, 2, 3, 1).reshape(b, h * w, self.num_heads, self.head_dim).transpose(1, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.shape
        q, k, v = self._heads(self.q(x)), self._heads(self.k(x)), self._heads(self.v(x))
        attn = self.softmax((q * self.scale) @ k.transpose(-1, -2))  # B, heads, N, N
        # B, heads, N, d -> B, C, H, W laid out channels_last, as the convolutions around it
        out = (attn @ v).transpose(1, 2).reshape(b, h, w, c).permute(0, 3, 1, 2)
        return x + self.bn(self.proj(out))
