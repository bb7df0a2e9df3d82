"""The training recipe, one for every architecture, and what it names: Imagenette's
classes, and which parameters get weight decay."""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field

from torch import nn

from ..models import BACKBONE_OPTIONS

IMAGENETTE_NAMES = {
    "n01440764": "tench",
    "n02102040": "English springer",
    "n02979186": "cassette player",
    "n03000684": "chain saw",
    "n03028079": "church",
    "n03394916": "French horn",
    "n03417042": "garbage truck",
    "n03425413": "gas pump",
    "n03445777": "golf ball",
    "n03888257": "parachute",
}


@dataclass
class Recipe:
    """The training recipe; identical for every architecture."""

    width: int = 32
    # The backbone (models.build_model, models.BACKBONE_OPTIONS): ResNet-C's deep stem
    # ("deep"; "" for torchvision's 7x7) and ResNet-D's average-pool shortcuts, timm's
    # stem_type and avg_down.
    stem_type: str = "deep"
    avg_down: bool = True
    batch_size: int = 96
    lr: float = 0.2
    momentum: float = 0.9
    weight_decay: float = 5e-4
    label_smoothing: float = 0.1
    warmup_epochs: float = 2.0
    # (epochs, crop size) phases, run in order.
    phases: list[tuple[int, int]] = field(default_factory=lambda: [(18, 96), (16, 112), (12, 128), (10, 160)])
    crop_scale: tuple[float, float] = (0.25, 1.0)
    decode_size: int = 224
    eval_size: int = 224
    # FixRes fine-tune after the phases: epochs at eval_size on whole images.
    finetune_epochs: int = 1
    finetune_lr: float = 0.02
    # Exponential moving average of the weights over the crop phases (0: none); the
    # fine-tune then starts from the average (timm's ModelEmaV3).
    ema_decay: float = 0.0
    # Mixup / CutMix over the crop phases (timm's Mixup; 0 and 0: none): the Beta
    # parameters, the share of batches mixed, and of those the share cut rather than blended.
    mixup_alpha: float = 0.0
    cutmix_alpha: float = 0.0
    mix_prob: float = 1.0
    mix_switch_prob: float = 0.5
    seed: int = 0

    @property
    def main_epochs(self) -> int:
        """Epochs of the progressive phases (random-resized crops)."""
        return sum(n for n, _ in self.phases)

    @property
    def epochs(self) -> int:
        """Every epoch trained: the phases, then the fine-tune."""
        return self.main_epochs + self.finetune_epochs

    def is_finetune(self, epoch: int) -> bool:
        return epoch >= self.main_epochs

    def crop_size(self, epoch: int) -> int:
        if self.is_finetune(epoch):
            return self.eval_size
        for n, size in self.phases:
            if epoch < n:
                return size
            epoch -= n
        return self.phases[-1][1]

    def lr_at(self, step: int, steps_per_epoch: int) -> float:
        warm = self.warmup_epochs * steps_per_epoch
        main = self.main_epochs * steps_per_epoch
        if step >= main:  # the fine-tune's own cosine, from finetune_lr to 0
            progress = (step - main) / max(1, self.finetune_epochs * steps_per_epoch)
            return self.finetune_lr * 0.5 * (1 + math.cos(math.pi * progress))
        if step < warm:
            return self.lr * (0.1 + 0.9 * step / warm)
        return self.lr * 0.5 * (1 + math.cos(math.pi * (step - warm) / max(1, main - warm)))

    @property
    def backbone(self) -> dict:
        """``build_model``'s arguments beyond the width, as the metadata records them
        (empty for torchvision's backbone, as in files written before these options)."""
        return {k: getattr(self, k) for k in BACKBONE_OPTIONS if getattr(self, k)}

    def to_json(self) -> dict:
        """Every setting as JSON types, as a pair's metadata records them."""
        return json.loads(json.dumps(asdict(self)))

    def main_fields(self) -> dict:
        """The settings that decide the phases' weights (JSON types), to check that a
        pair's main phases were trained with this recipe before fine-tuning it."""
        return {k: v for k, v in self.to_json().items() if not k.startswith("finetune_")}


def param_groups(model: nn.Module, weight_decay: float) -> list[dict]:
    """Weight decay on weights, none on norms and biases (1-D)."""
    decay, no_decay = [], []
    for p in model.parameters():
        (no_decay if p.ndim <= 1 else decay).append(p)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


def class_names(folders: list[str]) -> list[str]:
    return [IMAGENETTE_NAMES.get(f, f) for f in folders]
