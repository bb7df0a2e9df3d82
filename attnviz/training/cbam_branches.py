"""CBAM's design question: does one MLP shared by the average- and the max-pooled
descriptor cost anything?

Woo et al. ("CBAM", ECCV 2018, section 3) pass both descriptors through one shared MLP
and sum the outputs before the sigmoid. ``cbam_unshared_resnet18`` gives each its own
MLP (``ChannelGate(shared=False)``). For every CBAM channel gate this measures, over a
decoded image folder:

- ``correlation``: Pearson's r, over images and channels, of the two terms the sigmoid
  sums (``ChannelGate.branches``): near 1, the max branch says what the average branch
  says and one of them is nearly redundant; low, they carry different evidence.
- ``max_share``: mean |max term| / (mean |avg term| + mean |max term|): how much of the
  sum the max descriptor's term holds.
- ``weight_correlation`` (unshared gates only): r of the two MLPs' effective linear maps
  ``W2 @ W1`` (C x C, the ReLU left out): the product does not depend on the order of
  the hidden units, which separately learned MLPs do not share, so comparing their raw
  weights would say nothing. 1 for a shared MLP by construction.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
import torch
from torch import nn

from ..image import normalize
from ..layers import ChannelGate
from .data import DecodedFolder


@dataclass(frozen=True)
class BranchStats:
    correlation: float
    max_share: float
    weight_correlation: float | None

    def to_json(self) -> dict:
        return asdict(self)


def channel_gates(model: nn.Module) -> dict[str, ChannelGate]:
    """Every CBAM channel gate by module path; a model without any is refused."""
    gates = {name: m for name, m in model.named_modules() if isinstance(m, ChannelGate)}
    if not gates:
        name = getattr(getattr(model, "attnviz_meta", None), "name", "the model")
        raise ValueError(f"{name} has no CBAM channel gates; cbam-branches needs a CBAM model")
    return gates


def _pearson(a: np.ndarray, b: np.ndarray) -> float:
    a, b = a.ravel() - a.mean(), b.ravel() - b.mean()
    denom = np.sqrt((a * a).sum() * (b * b).sum())
    return float((a * b).sum() / denom) if denom > 0 else 0.0


def effective_map(mlp: nn.Sequential) -> torch.Tensor:
    """``W2 @ W1`` of a two-layer 1x1-conv MLP: (C, C)."""
    convs = [m for m in mlp if isinstance(m, nn.Conv2d)]
    return convs[1].weight[:, :, 0, 0] @ convs[0].weight[:, :, 0, 0]


def weight_correlation(gate: ChannelGate) -> float | None:
    """r of the two MLPs' effective maps; None for a shared MLP."""
    if gate.shared:
        return None
    with torch.no_grad():
        return _pearson(effective_map(gate.mlp_avg).numpy(), effective_map(gate.mlp_max).numpy())


@torch.inference_mode()
def branch_stats(model: nn.Module, data: DecodedFolder, mean, std, batch_size: int = 100) -> dict[str, BranchStats]:
    """Run every image of ``data`` through ``model`` (in eval mode) and measure each CBAM
    channel gate's two terms; the hooks are removed again whatever happens."""
    gates = channel_gates(model)
    terms: dict[str, list[tuple[np.ndarray, np.ndarray]]] = {name: [] for name in gates}
    handles = []

    def keep(name: str):
        def hook(module: ChannelGate, args: tuple) -> None:
            avg, mx = module.branches(args[0])
            terms[name].append((avg[:, :, 0, 0].float().numpy(), mx[:, :, 0, 0].float().numpy()))
        return hook

    try:
        for name, gate in gates.items():
            handles.append(gate.register_forward_pre_hook(keep(name)))
        for i in range(0, len(data.labels), batch_size):
            model(normalize(data.images[i : i + batch_size], mean, std))
    finally:
        for h in handles:
            h.remove()
    out = {}
    for name, gate in gates.items():
        avg = np.concatenate([a for a, _ in terms[name]]).astype(np.float64)  # images, channels
        mx = np.concatenate([m for _, m in terms[name]]).astype(np.float64)
        share = float(np.abs(mx).mean() / (np.abs(avg).mean() + np.abs(mx).mean()))
        out[name] = BranchStats(round(_pearson(avg, mx), 4), round(share, 4),
                                None if gate.shared else round(weight_correlation(gate), 4))
    return out
