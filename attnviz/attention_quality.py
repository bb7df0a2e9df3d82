"""How much a self-attention head really attends: three figures per layer and head.

- **entropy ÷ log N**: the mean over query rows of H(row) / log N. 1 = every row is
  uniform (the head averages the whole map); near 0 = each query looks at a few cells.
- **query-dependence**: the mean cosine distance (1 - cos) between the rows of two
  different queries of the same image. 0 = every pixel shows the same map.
- **image-dependence**: the mean cosine distance between the rows of the same query
  cell in two different images. 0 = a fixed positional pattern that ignores the picture.

Element-wise work is in float32, sums in float64. Means over pairs are exact, over all
pairs (not a random sample): for unit vectors
u_1..u_M, the mean cosine over the M(M-1) ordered pairs i != j is
(||sum u||^2 - M) / (M(M-1)), so no M x M matrix is formed and the result is
deterministic. Entropy and query-dependence come from one image; image-dependence
needs several images of one size (``AttentionQuality`` gathers them).

An axial attention layer is measured three times (``Analysis.attention_rows``): its
composed map (heads, N, N) under the layer's path, and each step's rows under the step's
path, the height step's as (heads, W*H, H) (every cell's row along its column: N = H
there) and the width step's as (heads, H*W, W).

This module is the arithmetic only; ``attention_stats`` runs models over images with it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

# A head whose entropy is at least this share of log N is "near uniform" in the app.
NEAR_UNIFORM = 0.95


def step_rows(step: torch.Tensor) -> torch.Tensor:
    """An axial step's weights (heads, lines, n, n) as rows (heads, lines * n, n): every
    query cell's attention along its line, measured as rows of n keys."""
    return step.reshape(step.shape[0], -1, step.shape[-1])


def _unit_rows(attn: torch.Tensor) -> torch.Tensor:
    return torch.nn.functional.normalize(attn.float(), dim=-1)


def _mean_pair_cosine(unit_sum: torch.Tensor, m: int) -> torch.Tensor:
    """Mean cosine over ordered pairs of distinct vectors, from the sum of the M unit vectors."""
    return (unit_sum.pow(2).sum(-1) - m) / (m * (m - 1))


def entropy_ratio(attn: torch.Tensor) -> torch.Tensor:
    """(heads,) mean over query rows of H(row) / log N, for attention (heads, N, N)."""
    n = attn.shape[-1]
    if n < 2:
        raise ValueError("entropy ÷ log N needs at least 2 keys")
    p = attn.float()
    h = -torch.special.xlogy(p, p).sum(-1, dtype=torch.float64)  # xlogy: 0 log 0 = 0
    return (h / math.log(n)).mean(-1).float()


def query_dependence(attn: torch.Tensor) -> torch.Tensor:
    """(heads,) mean over pairs of distinct queries of 1 - cos(row_i, row_j), for
    attention (heads, N, N) of one image."""
    return _query_dependence(_unit_rows(attn))


def _query_dependence(unit: torch.Tensor) -> torch.Tensor:
    """``query_dependence`` from the attention's unit rows."""
    n = unit.shape[-2]
    if n < 2:
        raise ValueError("query-dependence needs at least 2 queries")
    return (1 - _mean_pair_cosine(unit.sum(-2, dtype=torch.float64), n)).float()


def image_dependence(attns: list[torch.Tensor] | torch.Tensor) -> torch.Tensor:
    """(heads,) mean over queries and over pairs of distinct images of
    1 - cos(row_i in image a, row_i in image b), for M >= 2 attentions (heads, N, N)
    of one layer at one input size."""
    stack = torch.stack(list(attns)) if isinstance(attns, list) else attns
    if stack.shape[0] < 2:
        raise ValueError("image-dependence needs at least 2 images")
    return (1 - _mean_pair_cosine(_unit_rows(stack).sum(0, dtype=torch.float64), stack.shape[0])).mean(-1).float()


@dataclass(frozen=True)
class HeadQuality:
    """The three figures of one head; ``image_dependence`` is None from one image."""

    entropy: float
    query_dependence: float
    image_dependence: float | None = None

    @property
    def near_uniform(self) -> bool:
        return self.entropy >= NEAR_UNIFORM

    def to_json(self) -> dict:
        return {"entropy": self.entropy, "query_dependence": self.query_dependence,
                "image_dependence": self.image_dependence}


def head_quality(attn: torch.Tensor) -> list[HeadQuality]:
    """The figures of every head of one image's attention (heads, N, N)."""
    return [HeadQuality(float(e), float(q)) for e, q in zip(entropy_ratio(attn), query_dependence(attn))]


class AttentionQuality:
    """Accumulates the three figures over images, streaming: per layer it keeps only
    running sums and the sum of unit rows, (heads, N, N) doubles.

        meter = AttentionQuality()
        for path in images:
            meter.add(attnviz.analyze(path, model).self_attn)
        meter.result()  # {layer: [HeadQuality, ...]}
    """

    def __init__(self) -> None:
        self.images = 0
        self._entropy: dict[str, torch.Tensor] = {}
        self._query: dict[str, torch.Tensor] = {}
        self._unit_sum: dict[str, torch.Tensor] = {}

    def add(self, self_attn: dict[str, torch.Tensor]) -> None:
        """One image's attention matrices, layer -> (heads, N, N)."""
        for layer, attn in self_attn.items():
            if layer in self._unit_sum and self._unit_sum[layer].shape != attn.shape:
                raise ValueError(f"{layer}: attention of shape {tuple(attn.shape)} after "
                                 f"{tuple(self._unit_sum[layer].shape)}; use one input size")
            u = _unit_rows(attn)  # once: query-dependence and the running sum both need it
            e, q, u = entropy_ratio(attn).double(), _query_dependence(u).double(), u.double()
            if layer in self._unit_sum:
                self._entropy[layer] += e
                self._query[layer] += q
                self._unit_sum[layer] += u
            else:
                self._entropy[layer], self._query[layer], self._unit_sum[layer] = e, q, u
        self.images += 1

    def result(self) -> dict[str, list[HeadQuality]]:
        """Layer -> the figures of each head, means over the images added
        (image-dependence None with fewer than 2 images)."""
        out = {}
        m = self.images
        for layer, u in self._unit_sum.items():
            image = (1 - _mean_pair_cosine(u, m)).mean(-1).tolist() if m >= 2 else [None] * u.shape[0]
            out[layer] = [HeadQuality(float(e) / m, float(q) / m, None if i is None else float(i))
                          for e, q, i in zip(self._entropy[layer].tolist(), self._query[layer].tolist(), image)]
        return out
