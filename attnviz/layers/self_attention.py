"""Multi-head 2-D self-attention over every position of a feature map, with
content logits that cannot fade and a relative-position term valid at any size.

Vaswani et al., "Attention Is All You Need", NeurIPS 2017, https://arxiv.org/abs/1706.03762
applied to CNN feature maps as in Wang et al., "Non-local Neural Networks", CVPR 2018,
https://arxiv.org/abs/1711.07971; position logits added to the content logits, as
BoTNet (Srinivas et al., "Bottleneck Transformers for Visual Recognition", CVPR 2021,
https://arxiv.org/abs/2101.11605) and stand-alone self-attention (Ramachandran et al.,
NeurIPS 2019, https://arxiv.org/abs/1906.05909) do.

The feature map (B, C, H, W) is flattened row-major to N = H*W tokens of C channels
(token i = row * W + col). Q, K, V are 1x1 convolutions split into ``num_heads`` heads
of d = C / num_heads channels; for each head

    attn = softmax(tau * cos(q_i, k_j) - slope * ||p_i - p_j||)      # B, heads, N, N

and the heads of ``attn @ v`` are joined, projected back to C by a 1x1 conv +
BatchNorm and added to the input (a residual).

Departures from the papers, each for a measured reason (docs/training.md has the table):

- **Cosine content logits with a learned temperature** ``tau`` per head (Swin
  Transformer V2, Liu et al., CVPR 2022, https://arxiv.org/abs/2111.09883: start at 10,
  capped at 100), instead of q.k / sqrt(d). With dot products, weight decay shrank q
  and k until every row of the 14x14 layer was 1/N: the layer had become an average
  pool. A cosine does not depend on the norms of q and k, so the content term keeps
  its range whatever the decay does to them.
- **Relative position as a distance penalty** with a fixed slope per head, in feature
  cells: ALiBi's linear bias (Press et al., "Train Short, Test Long", ICLR 2022,
  https://arxiv.org/abs/2108.12409) taken to 2-D, instead of BoTNet's table of learned
  offsets. It has no fixed extent, so the layer runs at any input size (the training
  crops are 96 to 224 px). As in ALiBi the slopes are constants, geometric over the
  heads (here from 1 to 1/4 per cell). Learned, in a short probe, they drifted towards
  zero, one below it (attending away from the query), and those heads came closest to
  showing the same map for every query. A bias learned from zero never leaves it: at
  uniform attention almost no gradient reaches the logits.
- The output BatchNorm's scale starts at zero, so at initialisation the layer is the
  identity (SAGAN's gamma = 0).

The softmax is the submodule ``softmax``: a forward hook on it sees the attention
matrix (B, heads, N, N) whose rows sum to 1, row i being where query position i looks.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from .gate import Softmax

MAX_TEMPERATURE = 100.0  # Swin V2's cap on the cosine's scale


def temperature(logit_scale: torch.Tensor) -> torch.Tensor:
    """(heads,) each head's scale of its cosine logits from its learned log, capped: in (0, 100]."""
    return logit_scale.clamp(max=math.log(MAX_TEMPERATURE)).exp()


def distance_slopes(num_heads: int) -> torch.Tensor:
    """(heads,) the fixed distance slopes, geometric from 1 to 1/4 per cell over the heads."""
    return torch.tensor([4.0 ** (-i / max(1, num_heads - 1)) for i in range(num_heads)])


def cell_distances(h: int, w: int, device: torch.device | None = None) -> torch.Tensor:
    """(N, N) Euclidean distances between the cells of an h x w grid, row-major
    (token i = row * w + col), in cells."""
    rows, cols = torch.meshgrid(torch.arange(h, device=device), torch.arange(w, device=device), indexing="ij")
    pos = torch.stack([rows.flatten(), cols.flatten()], dim=-1).float()  # N, 2
    return torch.cdist(pos, pos)


class SelfAttention2d(nn.Module):
    """``x + bn(proj(softmax(tau cos(q, k) - slope * distance) v))`` over all H*W positions."""

    def __init__(self, channels: int, num_heads: int = 4) -> None:
        super().__init__()
        if channels % num_heads:
            raise ValueError(f"channels ({channels}) must be divisible by num_heads ({num_heads})")
        self.num_heads = num_heads
        self.head_dim = channels // num_heads
        self.q = nn.Conv2d(channels, channels, kernel_size=1, bias=False)
        self.k = nn.Conv2d(channels, channels, kernel_size=1, bias=False)
        self.v = nn.Conv2d(channels, channels, kernel_size=1, bias=False)
        # log of each head's temperature (Swin V2's logit_scale), learned
        self.logit_scale = nn.Parameter(torch.full((num_heads,), math.log(10.0)))
        # each head's distance slope: a constant, saved with the weights so a file says which it was trained with
        self.register_buffer("slope", distance_slopes(num_heads))
        self.softmax = Softmax(dim=-1)
        self.proj = nn.Conv2d(channels, channels, kernel_size=1, bias=False)
        self.bn = nn.BatchNorm2d(channels)
        nn.init.zeros_(self.bn.weight)
        self._distances: dict[tuple[int, int, torch.device], torch.Tensor] = {}

    def temperature(self) -> torch.Tensor:
        """(heads,) the scale of each head's cosine logits, in (0, 100]."""
        return temperature(self.logit_scale)

    def position_logits(self, h: int, w: int) -> torch.Tensor:
        """(heads, N, N) the position term added to the content logits: -slope * distance."""
        key = (h, w, self.slope.device)
        if key not in self._distances:  # a constant of the grid: made once per size
            self._distances[key] = cell_distances(h, w, self.slope.device)
        return -self.slope.view(-1, 1, 1) * self._distances[key]

    def _heads(self, t: torch.Tensor) -> torch.Tensor:
        b, c, h, w = t.shape
        # B, C, H, W -> B, heads, N, d with N row-major (a view when t is channels_last)
        return t.permute(0, 2, 3, 1).reshape(b, h * w, self.num_heads, self.head_dim).transpose(1, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.shape
        q = F.normalize(self._heads(self.q(x)), dim=-1, eps=1e-6)
        k = F.normalize(self._heads(self.k(x)), dim=-1, eps=1e-6)
        v = self._heads(self.v(x))
        tau = self.temperature().view(1, -1, 1, 1).to(q.dtype)
        logits = (q * tau) @ k.transpose(-1, -2) + self.position_logits(h, w).to(q.dtype)  # B, heads, N, N
        attn = self.softmax(logits)
        # B, heads, N, d -> B, C, H, W laid out channels_last, as the convolutions around it
        out = (attn @ v).transpose(1, 2).reshape(b, h, w, c).permute(0, 3, 1, 2)
        return x + self.bn(self.proj(out))
