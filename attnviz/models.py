"""The ResNet-18s attnviz ships: same backbone, differing only in attention.

Built on torchvision's ``ResNet`` and ``BasicBlock``. torchvision's ``ResNet.__init__``
fixes the stem at 64 channels, so ``AttnResNet`` sets up the same layers with a
``width`` argument (32 is the shipped size: channels 32, 64, 128, 256) and reuses
torchvision's forward. Its stem and shortcuts are torchvision's, or ResNet-C's deep stem and
ResNet-D's average-pool shortcuts (``stem_type='deep'``, ``avg_down``: timm's names, as in its
``resnet18d``); a weights file's metadata says which (``WeightsMeta.backbone``). Attention is placed as in the papers:

- ``se_resnet18``: an SE block on the residual branch of every block, before the
  addition (Hu et al., Fig. 3) at ``layerS.B.se``;
- ``cbam_resnet18``: CBAM at the same place (Woo et al., Fig. 3) at ``layerS.B.cbam``;
- ``sa_resnet18``: multi-head self-attention on the residual branch of the last block
  of stage 2 and stage 3 (``layer2.1.attn``, ``layer3.1.attn``), so that query maps
  exist at stride 8 and 16: 28x28 and 14x14 at a 224 px input; 2 and 4 heads;
- ``axial_resnet18``: axial attention (height then width) at the same place, the last
  block of a stage (``layerS.1.axial``), in stages 1, 2 and 3: 56x56, 28x28 and 14x14
  at 224 px; 1, 2 and 4 heads (32 channels a head, as ``sa_resnet18``). Stride 4 is
  where axial attention is worth seeing: there full attention would hold (H*W)^2 = 9.8 M
  weights a head, which is why ``sa_resnet18`` starts at stride 8, and axial 0.35 M.
  Stages 2 and 3 are ``sa_resnet18``'s places, so the two compare layer by layer. Not
  stage 4: at 7x7 axial and full attention cost about the same and the map is coarse.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import partial

import torch
from torch import nn
from torchvision.models.resnet import BasicBlock, ResNet, conv1x1

from .layers import CBAM, AxialAttention2d, SelfAttention2d, SqueezeExcite

STAGE_DEPTHS = (2, 2, 2, 2)
STEM_TYPES = ("", "deep")
"""``AttnResNet``'s stems: torchvision's 7x7 convolution, or ResNet-C's three 3x3 (``_deep_stem``)."""
BACKBONE_OPTIONS = ("stem_type", "avg_down")
"""``build_model``'s arguments beyond the width that change the backbone (the recipe's fields of
the same names, and the keys of a weights file's ``backbone``)."""
# sa_resnet18's attention heads per stage: 32 channels a head at the shipped width
# (64 channels in stage 2, 128 in stage 3). Each head's N x N matrix is what costs
# (memory, and training time at stride 8), not its width.
SA_HEADS = {2: 2, 3: 4}
# axial_resnet18's heads per stage: 32 channels a head, as SA_HEADS (32 channels in stage 1).
AXIAL_HEADS = {1: 1, 2: 2, 3: 4}


class _BranchAttentionBlock(BasicBlock):
    """A BasicBlock whose residual branch passes through an attention module before
    the addition. Subclasses name that module; the positional arguments are
    torchvision's so that the block is built like any BasicBlock."""

    attn_name: str = ""

    def _attend(self, out: torch.Tensor) -> torch.Tensor:
        return getattr(self, self.attn_name)(out)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self._attend(self.bn2(self.conv2(out)))
        return self.relu(out + identity)


class SEBasicBlock(_BranchAttentionBlock):
    attn_name = "se"

    def __init__(self, inplanes: int, planes: int, *args, reduction: int = 16, **kwargs) -> None:
        super().__init__(inplanes, planes, *args, **kwargs)
        self.se = SqueezeExcite(planes, reduction)


class CBAMBasicBlock(_BranchAttentionBlock):
    attn_name = "cbam"

    def __init__(
        self, inplanes: int, planes: int, *args, reduction: int = 16, kernel_size: int = 7, shared: bool = True,
        **kwargs,
    ) -> None:
        super().__init__(inplanes, planes, *args, **kwargs)
        self.cbam = CBAM(planes, reduction, kernel_size=kernel_size, shared=shared)


class SABasicBlock(_BranchAttentionBlock):
    attn_name = "attn"

    def __init__(self, inplanes: int, planes: int, *args, num_heads: int, **kwargs) -> None:
        super().__init__(inplanes, planes, *args, **kwargs)
        self.attn = SelfAttention2d(planes, num_heads)


class AxialBasicBlock(_BranchAttentionBlock):
    attn_name = "axial"

    def __init__(self, inplanes: int, planes: int, *args, num_heads: int, **kwargs) -> None:
        super().__init__(inplanes, planes, *args, **kwargs)
        self.axial = AxialAttention2d(planes, num_heads)


BlockChooser = Callable[[int, int], Callable[..., BasicBlock]]
"""(stage 1..4, block index) -> block class (or a partial of one)."""


class AttnResNet(ResNet):
    """torchvision's ResNet with a configurable width and a block class per position."""

    def __init__(
        self,
        choose_block: BlockChooser,
        layers: Sequence[int] = STAGE_DEPTHS,
        *,
        width: int = 64,
        num_classes: int = 1000,
        stem_type: str = "",
        avg_down: bool = False,
    ) -> None:
        if stem_type not in STEM_TYPES:
            raise ValueError(f"stem_type must be one of {STEM_TYPES}, got {stem_type!r}")
        nn.Module.__init__(self)
        self.avg_down = avg_down
        self._norm_layer = nn.BatchNorm2d
        self.inplanes = width
        self.dilation = 1
        self.groups = 1
        self.base_width = 64
        self.conv1 = _deep_stem(width) if stem_type == "deep" else \
            nn.Conv2d(3, width, kernel_size=7, stride=2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(kernel_size=3, stride=2, padding=1)
        self.layer1 = self._stage(choose_block, 1, width, layers[0], stride=1)
        self.layer2 = self._stage(choose_block, 2, width * 2, layers[1], stride=2)
        self.layer3 = self._stage(choose_block, 3, width * 4, layers[2], stride=2)
        self.layer4 = self._stage(choose_block, 4, width * 8, layers[3], stride=2)
        self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
        self.fc = nn.Linear(width * 8 * BasicBlock.expansion, num_classes)
        self._init_weights()

    def _stage(self, choose_block: BlockChooser, stage: int, planes: int, blocks: int, stride: int) -> nn.Sequential:
        # As torchvision's ResNet._make_layer, with the block class chosen per block.
        downsample = None
        if stride != 1 or self.inplanes != planes:
            if self.avg_down and stride != 1:  # ResNet-D: average, then a stride-1 1x1 convolution
                downsample = nn.Sequential(nn.AvgPool2d(stride, stride, ceil_mode=True, count_include_pad=False),
                                           conv1x1(self.inplanes, planes), nn.BatchNorm2d(planes))
            else:
                downsample = nn.Sequential(conv1x1(self.inplanes, planes, stride), nn.BatchNorm2d(planes))
        layers = []
        for i in range(blocks):
            block = choose_block(stage, i)
            layers.append(block(self.inplanes, planes, stride if i == 0 else 1, downsample if i == 0 else None))
            self.inplanes = planes
        return nn.Sequential(*layers)

    def _init_weights(self) -> None:
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
        # Zero-init the last BN of every residual branch (and of self-attention's
        # output): each block starts as the identity, which trains better.
        for m in self.modules():
            if isinstance(m, BasicBlock):
                nn.init.zeros_(m.bn2.weight)
            elif isinstance(m, (SelfAttention2d, AxialAttention2d)):
                nn.init.zeros_(m.bn.weight)


def _deep_stem(width: int) -> nn.Sequential:
    """ResNet-C's stem (He et al., "Bag of Tricks", 2019; timm's ``stem_type='deep'``): three
    3x3 convolutions, the first with stride 2, of width/2, width/2 and width channels, in place
    of one 7x7; the model's ``bn1``, ReLU and max-pool follow as before."""
    half = width // 2
    return nn.Sequential(
        nn.Conv2d(3, half, 3, stride=2, padding=1, bias=False), nn.BatchNorm2d(half), nn.ReLU(inplace=True),
        nn.Conv2d(half, half, 3, padding=1, bias=False), nn.BatchNorm2d(half), nn.ReLU(inplace=True),
        nn.Conv2d(half, width, 3, padding=1, bias=False),
    )


def _sa_block(stage: int, i: int) -> Callable[..., BasicBlock]:
    if stage in SA_HEADS and i == STAGE_DEPTHS[stage - 1] - 1:
        return partial(SABasicBlock, num_heads=SA_HEADS[stage])
    return BasicBlock


def _axial_block(stage: int, i: int) -> Callable[..., BasicBlock]:
    if stage in AXIAL_HEADS and i == STAGE_DEPTHS[stage - 1] - 1:
        return partial(AxialBasicBlock, num_heads=AXIAL_HEADS[stage])
    return BasicBlock


@dataclass(frozen=True)
class Architecture:
    """One entry of the registry: how to build the model and which attention kinds
    (``capture.KINDS``) it produces, from which the CLI, the app's views and the
    tests are derived. ``shipped``: whether ``weights/`` holds trained weights
    for it (the others are built, trained and loaded from a user's folder all the same)."""

    name: str
    choose_block: BlockChooser
    kinds: tuple[str, ...]
    summary: str
    shipped: bool = True


REGISTRY: dict[str, Architecture] = {a.name: a for a in (
    Architecture("resnet18", lambda stage, i: BasicBlock, (), "no attention (the baseline)"),
    Architecture("se_resnet18", lambda stage, i: SEBasicBlock, ("se",), "SE in every block"),
    Architecture("cbam_resnet18", lambda stage, i: CBAMBasicBlock, ("cbam_channel", "cbam_spatial"),
                 "CBAM in every block"),
    Architecture("cbam_unshared_resnet18", lambda stage, i: partial(CBAMBasicBlock, shared=False),
                 ("cbam_channel", "cbam_spatial"),
                 "CBAM in every block, one MLP for the average and one for the max descriptor"),
    Architecture("sa_resnet18", _sa_block, ("self_attn",), "self-attention in the last block of stages 2 and 3"),
    Architecture("axial_resnet18", _axial_block, ("axial_height", "axial_width"),
                 "axial attention (height, then width) in the last block of stages 1, 2 and 3"),
)}
ARCHITECTURES = tuple(REGISTRY)
"""Every registered architecture, by name: adding one is an entry in ``REGISTRY``."""
SHIPPED = tuple(a.name for a in REGISTRY.values() if a.shipped)
"""The architectures whose trained weights ship in ``weights/`` (``weights.SHIPPED_DIR``)."""


def build_model(arch: str, *, width: int = 32, num_classes: int = 10, stem_type: str = "",
                avg_down: bool = False) -> AttnResNet:
    """A randomly initialised model of one of ``ARCHITECTURES``, in training mode.
    ``stem_type='deep'`` and ``avg_down`` are timm's names for ResNet-C's stem and ResNet-D's
    shortcuts (timm's ``resnet18d`` has both); the attention is placed the same either way."""
    if arch not in REGISTRY:
        raise ValueError(f"unknown architecture {arch!r}; known: {', '.join(ARCHITECTURES)}")
    return AttnResNet(REGISTRY[arch].choose_block, width=width, num_classes=num_classes, stem_type=stem_type,
                      avg_down=avg_down)


def attention_heads(model: nn.Module) -> dict[str, int]:
    """Heads of every self-attention and axial attention layer by module path; {} for a
    model without. The weights' metadata records them: they shape no tensor of the full
    layer, so a file cannot show them."""
    return {name: m.num_heads for name, m in model.named_modules()
            if isinstance(m, (SelfAttention2d, AxialAttention2d))}


def complexity(model: nn.Module, size: int = 224) -> tuple[int, float]:
    """(parameters, GFLOPs of one ``size`` px image), FLOPs counted by torch's
    ``FlopCounterMode`` (convolutions and matrix products, 2 per multiply-add;
    pooling, softmax and sigmoids are not counted)."""
    from torch.utils.flop_counter import FlopCounterMode

    params = sum(p.numel() for p in model.parameters())
    with torch.inference_mode(), FlopCounterMode(display=False) as counter:
        model(torch.zeros(1, 3, size, size))
    return params, counter.get_total_flops() / 1e9
