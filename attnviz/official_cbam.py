"""The CBAM authors' ImageNet ResNet-50, so that their released checkpoint loads in attnviz.

Woo, Park, Lee, Kweon, "CBAM: Convolutional Block Attention Module", ECCV 2018,
https://arxiv.org/abs/1807.06521; code and checkpoint: github.com/Jongchan/attention-module
(``MODELS/model_resnet.py``, ``MODELS/cbam.py``; ``RESNET50_CBAM_new_name_wrap.pth``,
ACC@1 77.622 on ImageNet-1k val according to its README). timm has no CBAM weights at all.

The architecture is torchvision's ResNet-50 (the authors' ``Bottleneck`` has the same
layers, names and stride on the 3x3 conv) with CBAM applied to ``bn3``'s output, before
the residual addition. attnviz's own ``layers.CBAM`` computes what the authors' module
computes: their channel MLP (``Flatten, Linear(C, C/16), ReLU, Linear(C/16, C)``, biases,
shared by the average- and max-pooled descriptors, summed, sigmoid) is a 1x1-conv MLP
with the same weights; their spatial input is stacked [max, mean] over channels, then a
7x7 conv without bias, a BatchNorm (eps 1e-5) and no ReLU, then sigmoid, as ours. So
their gates are captured as ``cbam_channel`` and ``cbam_spatial`` by attnviz's own gate
modules, and every view and ``intervene`` works unchanged.

Their keys -> attnviz's (a ``module.`` prefix and a ``{"state_dict": ...}`` wrapper with
``epoch``, ``arch``, ``best_prec1`` are unwrapped by ``timm_adapter.read_checkpoint``):

| the authors' | attnviz's |
|---|---|
| ``layerS.B.cbam.ChannelGate.mlp.1.*`` (Linear) | ``layerS.B.cbam.channel.mlp.0.*`` (weight as (out, in, 1, 1)) |
| ``layerS.B.cbam.ChannelGate.mlp.3.{weight,bias}`` (Linear) | ``layerS.B.cbam.channel.mlp.2.*`` |
| ``layerS.B.cbam.SpatialGate.spatial.conv.weight`` | ``layerS.B.cbam.spatial.conv.weight`` |
| ``layerS.B.cbam.SpatialGate.spatial.bn.*`` | ``layerS.B.cbam.spatial.bn.*`` |
| everything else | the same (torchvision's ResNet names) |

BatchNorm's ``num_batches_tracked`` (absent from checkpoints of PyTorch before 0.4.1, and
unused in eval mode) is filled in as 0 where it is missing. One departure from the
authors' code: the global pool is adaptive instead of ``AvgPool2d(7)``, the same at
224 px, and the model also runs at other sizes.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import torch
from torch import nn
from torchvision.models.resnet import Bottleneck, ResNet

from .layers import CBAM
from .weights import IMAGENET_MEAN, IMAGENET_STD, WeightsError, WeightsMeta, check_state_dict, sha256_of

PREFIX = "cbam:"
DEPTHS: dict[str, list[int]] = {"resnet50": [3, 4, 6, 3], "resnet101": [3, 4, 23, 3]}
"""The authors' ImageNet ResNets with Bottleneck blocks; they released weights for resnet50 only."""

CHECKPOINT = "RESNET50_CBAM_new_name_wrap.pth"
CODE = "github.com/Jongchan/attention-module"
TOP1 = 77.622  # the authors' README, ImageNet-1k val, 224 px centre crop

_KEYS = (  # the authors' CBAM submodule names -> attnviz's
    (re.compile(r"\.cbam\.ChannelGate\.mlp\.1\."), ".cbam.channel.mlp.0."),
    (re.compile(r"\.cbam\.ChannelGate\.mlp\.3\."), ".cbam.channel.mlp.2."),
    (re.compile(r"\.cbam\.SpatialGate\.spatial\.conv\."), ".cbam.spatial.conv."),
    (re.compile(r"\.cbam\.SpatialGate\.spatial\.bn\."), ".cbam.spatial.bn."),
)


class CBAMBottleneck(Bottleneck):
    """torchvision's Bottleneck with CBAM on the residual branch after ``bn3``, before the
    addition: the authors' ``Bottleneck(use_cbam=True)``. Positional arguments are torchvision's."""

    def __init__(self, inplanes: int, planes: int, *args, reduction: int = 16, **kwargs) -> None:
        super().__init__(inplanes, planes, *args, **kwargs)
        self.cbam = CBAM(planes * self.expansion, reduction)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.cbam(self.bn3(self.conv3(out)))  # B, 4 * planes, H, W
        return self.relu(out + identity)


def _depth(name: str) -> str:
    arch = name[len(PREFIX):] if name.startswith(PREFIX) else name
    if arch not in DEPTHS:
        raise WeightsError(f"unknown CBAM model {name!r}; available: {', '.join(PREFIX + d for d in DEPTHS)}")
    return arch


def build(name: str = "cbam:resnet50", num_classes: int = 1000) -> ResNet:
    """``cbam:resnet50`` (or ``resnet101``) with random weights, in training mode."""
    return ResNet(CBAMBottleneck, DEPTHS[_depth(name)], num_classes=num_classes)


def from_authors(state: dict[str, torch.Tensor], model: nn.Module) -> dict[str, torch.Tensor]:
    """The authors' state dict (without ``module.``) in ``model``'s names and shapes; keys
    already in attnviz's names pass unchanged."""
    out = {}
    for key, value in state.items():
        for pattern, new in _KEYS:
            key = pattern.sub(new, key)
        if ".cbam.channel.mlp." in key and key.endswith(".weight") and value.ndim == 2:
            value = value[:, :, None, None]  # Linear (out, in) -> 1x1 conv (out, in, 1, 1)
        out[key] = value
    for key, value in model.state_dict().items():
        if key.endswith(".num_batches_tracked") and key not in out and key.rsplit(".", 1)[0] + ".weight" in out:
            out[key] = torch.zeros_like(value)
    return out


def load(name: str, checkpoint: str | os.PathLike | None = None, pretrained: bool = True,
         download: bool = False) -> nn.Module:
    """``cbam:resnet50`` with the authors' checkpoint file (their key layout, or attnviz's),
    or with ``pretrained=False`` random weights; in eval mode with ``.attnviz_meta``
    (ImageNet classes from timm's class info for a 1000-class head, 224 px, ImageNet mean
    and std). Raises ``WeightsError`` (one line) for a checkpoint of another shape."""
    from .timm_adapter import imagenet_classes, read_checkpoint

    arch = _depth(name)
    if checkpoint is None and pretrained:
        how = "attnviz cannot download it" if download else "no checkpoint given"
        raise WeightsError(f"{PREFIX}{arch}: {how}; the authors' {CHECKPOINT} is linked from {CODE}'s README: pass "
                           "that file as checkpoint= (--checkpoint), or pretrained=False (--random-weights)")
    source = Path(checkpoint) if checkpoint is not None else None
    num_classes = 1000
    model = build(arch)
    if source is not None:
        state = read_checkpoint(source)
        fc = state.get("fc.weight")
        if fc is not None and fc.ndim == 2 and fc.shape[0] != num_classes:
            num_classes = int(fc.shape[0])  # a fine-tuned head
            model = build(arch, num_classes)
        state = from_authors(state, model)
        try:
            check_state_dict(model, state, source.name)
        except WeightsError as exc:
            raise WeightsError(str(exc).replace("does not match its metadata",
                                                f"is not a checkpoint of the authors' CBAM {arch}")) from None
        model.load_state_dict(state, strict=True)
    model.eval()
    classes, ids = imagenet_classes(num_classes)
    model.attnviz_meta = WeightsMeta(
        name=f"{PREFIX}{arch}", arch=f"{PREFIX}{arch}", width=0, classes=classes, class_ids=ids, input_size=224,
        mean=IMAGENET_MEAN, std=IMAGENET_STD, resize="squash", interpolation="bilinear",
        dataset={"name": "ImageNet-1k" if num_classes == 1000 else f"{num_classes} classes"},
        training={"weights": str(source) if source is not None else "random (pretrained=False)", "code": CODE},
        sha256=sha256_of(source) if source is not None else "")
    return model
