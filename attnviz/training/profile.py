"""The SE paper's analysis of excitation, at small scale: computed over a decoded
ImageFolder (the format, ``SEProfile``, is in ``attnviz.profile``).

Hu et al., "Squeeze-and-Excitation Networks" (TPAMI 2019), section "Role of
Excitation": the mean excitation of each channel, per class, in each SE block. The
paper found early blocks class-agnostic (the curves of all classes lie on each other)
and the late blocks class-specific. We measure this with one number per block, the
class specificity: the between-class share of the variance of the excitations,
summed over channels,

    sum_c Var_between(c) / sum_c Var_total(c)  in 0..1,

0 when every class has the same mean gates, 1 when the gates depend only on the class.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from ..capture import attention_modules, capture
from ..image import normalize
from ..profile import SEProfile
from .data import DecodedFolder


def class_specificity(gates: np.ndarray, labels: np.ndarray) -> float:
    """Between-class share of the variance of (images, channels) ``gates``."""
    total = ((gates - gates.mean(0)) ** 2).sum()
    between = sum(
        (labels == k).sum() * ((gates[labels == k].mean(0) - gates.mean(0)) ** 2).sum() for k in np.unique(labels)
    )
    return float(between / total) if total > 0 else 0.0


def se_blocks(model: nn.Module) -> list[str]:
    """Paths of the model's SE gates; a model without any is refused."""
    blocks = [p for p, kind in attention_modules(model).items() if kind == "se"]
    if not blocks:
        raise ValueError(f"{model.attnviz_meta.name} has no SE blocks; profile needs an SE model")
    return blocks


@torch.inference_mode()
def se_profile(model: nn.Module, data: DecodedFolder, targets: torch.Tensor, batch_size: int = 100) -> SEProfile:
    """Run every image of ``data`` (a loaded model's input, ``targets`` its model class
    indices) through ``model`` and profile its SE gates, for the classes present."""
    meta = model.attnviz_meta
    blocks = se_blocks(model)
    with capture(model, blocks) as maps:
        for i in range(0, len(targets), batch_size):
            model(normalize(data.images[i : i + batch_size], meta.mean, meta.std))
    labels = targets.numpy()
    present = sorted(set(labels.tolist()))
    means, spec = {}, {}
    for block in blocks:
        g = maps[block][:, :, 0, 0].numpy().astype(np.float64)  # images, channels
        means[block] = [g[labels == k].mean(0).round(6).tolist() for k in present]
        spec[block] = round(class_specificity(g, labels), 6)
    return SEProfile(model=meta.name, classes=[meta.classes[k] for k in present], images=len(labels),
                     means=means, specificity=spec)
