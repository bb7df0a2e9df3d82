"""``attnviz evaluate``: top-1 on an ImageFolder directory, through the app's
preprocessing; ``predict`` and ``top1`` also measure a model while it trains."""

from __future__ import annotations

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
