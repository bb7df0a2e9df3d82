"""``attnviz evaluate``: top-1 on an ImageFolder directory, through the app's
preprocessing; ``predict`` and ``top1`` also measure a model while it trains;
``paired_test``: whether two models' top-1 on the same images differ (McNemar's exact test)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from ..image import normalize
from ..weights import IMAGENET_MEAN, IMAGENET_STD, WeightsError, WeightsMeta
from .data import DecodedFolder, decode_folder


@torch.inference_mode()
def predict(model: nn.Module, data: DecodedFolder, mean, std, batch_size: int = 128) -> torch.Tensor:
    """Predicted class of every image, fp32, exactly as ``attnviz.analyze`` feeds them."""
    preds = []
    for i in range(0, len(data.labels), batch_size):
        x = normalize(data.images[i : i + batch_size], mean, std, torch.channels_last)
        preds.append(model(x).argmax(1))
    return torch.cat(preds)


def top1(model: nn.Module, data: DecodedFolder, mean=IMAGENET_MEAN, std=IMAGENET_STD) -> float:
    was_training = model.training
    model.eval()
    try:
        return (predict(model, data, mean, std) == data.labels).float().mean().item()
    finally:
        model.train(was_training)


def model_targets(meta: WeightsMeta, data: DecodedFolder) -> torch.Tensor:
    """The model's class index of every image of an ImageFolder, matching folder names
    to the model's classes by id (``n01440764``) or by name."""
    index = {c: i for i, c in enumerate(meta.class_ids)} | {c: i for i, c in enumerate(meta.classes)}
    unknown = [c for c in data.classes if c not in index]
    if unknown:
        raise WeightsError(f"folders {', '.join(unknown[:3])} are not classes of {meta.name}")
    return torch.tensor([index[data.classes[i]] for i in data.labels.tolist()])


def evaluate(model: nn.Module, directory: Path, size: int | None = None) -> tuple[float, int, int]:
    """(top-1, number of images, input size) of a loaded model (``attnviz.load_model``),
    through the app's preprocessing."""
    meta = model.attnviz_meta
    size = size or meta.input_size
    data = decode_folder(directory, size)
    target = model_targets(meta, data)
    preds = predict(model, data, meta.mean, meta.std)
    return (preds == target).float().mean().item(), len(target), size


def correct(model: nn.Module, directory: Path, size: int | None = None) -> torch.Tensor:
    """Whether ``model`` (a loaded model) gets each image of the folder right, in the
    folder's sorted order: (N,) bool."""
    meta = model.attnviz_meta
    data = decode_folder(directory, size or meta.input_size)
    return predict(model, data, meta.mean, meta.std) == model_targets(meta, data)


@dataclass(frozen=True)
class PairedTest:
    """Two models on the same images: each one's top-1, the images only one of them gets
    right, and McNemar's exact two-sided p-value (a binomial test of those discordant
    images against 1/2: the images both get right or both wrong say nothing of which
    is better)."""

    images: int
    top1_a: float
    top1_b: float
    only_a: int
    only_b: int
    p_value: float

    def verdict(self, alpha: float = 0.05) -> str:
        if self.p_value >= alpha:
            return "indistinguishable"
        return "A better" if self.only_a > self.only_b else "B better"


def paired_test(correct_a: torch.Tensor, correct_b: torch.Tensor) -> PairedTest:
    """McNemar's exact test of two (N,) bool tensors of right answers on the same images."""
    from scipy.stats import binomtest

    if correct_a.shape != correct_b.shape:
        raise ValueError(f"not the same images: {tuple(correct_a.shape)} and {tuple(correct_b.shape)} answers")
    only_a = int((correct_a & ~correct_b).sum())
    only_b = int((~correct_a & correct_b).sum())
    p = binomtest(only_a, only_a + only_b, 0.5).pvalue if only_a + only_b else 1.0
    return PairedTest(len(correct_a), correct_a.float().mean().item(), correct_b.float().mean().item(),
                      only_a, only_b, float(p))
