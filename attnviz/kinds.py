"""The one table of attention kinds (as timm's ``get_attn`` is its one place for layers).

A kind is what one attention module outputs, in one shape, with one meaning. Its row says
everything the rest of attnviz needs to know about it:

- ``name``: the capture kind (``capture``), the attribute of ``Analysis`` that holds it
  (``a.se``, ``a.cbam_spatial``, ...) and its prefix in the NPZ export (``se/<path>``);
  ``label`` names it for people, ``shape`` says what ``Analysis`` holds per module;
- ``layer`` and ``output``: attnviz's own layer that produces it and that layer's
  submodule whose output is recorded (timm's layers: ``timm_adapter``'s table);
- ``keep``: a captured batch (B, ...) and an image index -> what ``Analysis`` keeps;
- ``view``: the app's view that draws it (``attnviz.app.views``);
- ``form``: how a static figure draws it (``explain``'s PNGs): ``channels`` (an overview
  of every block's gates), ``map`` (an overlay on the photo), ``maps`` (the mean
  of several overlays), ``matrix`` (a query pixel's map per head), ``steps`` (none: an
  axial layer's two steps are drawn as their composed matrix);
- ``interventions``: what ``attnviz.intervene`` can do to it;
- ``matrix``: an attention matrix whose rows sum to 1 (its layer only reads it, so the
  capture keeps it without a copy, and the quality figures apply);
- ``exported``: written by ``attnviz explain`` and the app's Export view.

Adding a kind: a row here, the layer (or a row in ``timm_adapter``), and, for a new
picture, a view module (docs/architecture.md walks through one).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

from .layers import AxialStep, ChannelGate, SelfAttention2d, SpatialGate, SqueezeExcite


def _channels(t: torch.Tensor, i: int) -> torch.Tensor:
    return t[i, :, 0, 0]  # (B, C, 1, 1) -> (C,)


def _spatial(t: torch.Tensor, i: int) -> torch.Tensor:
    return t[i, 0]  # (B, 1, H, W) -> (H, W)


def _whole(t: torch.Tensor, i: int) -> torch.Tensor:
    return t[i]


@dataclass(frozen=True)
class Kind:
    """One row of ``KINDS``; see the module's docstring for the fields."""

    name: str
    label: str
    shape: str
    layer: type[nn.Module] | None
    output: str
    keep: Callable[[torch.Tensor, int], torch.Tensor]
    view: str | None
    form: str
    interventions: tuple[str, ...] = ()
    matrix: bool = False
    exported: bool = True
    axis: str | None = None  # for an axial step: the axis of the ``layer`` it comes from

    def produced_by(self, module: nn.Module) -> bool:
        """Whether ``module`` (one of attnviz's layers) outputs this kind."""
        return self.layer is not None and isinstance(module, self.layer) and \
            (self.axis is None or getattr(module, "axis", None) == self.axis)


GATE_INTERVENTIONS = ("gates-off", "gates-mean", "knockout-top")

KINDS: dict[str, Kind] = {k.name: k for k in (
    Kind("se", label="SE gates", shape="(C,) one gate in 0..1 per channel",
         layer=SqueezeExcite, output="gate", keep=_channels, view="se", form="channels",
         interventions=GATE_INTERVENTIONS),
    Kind("cbam_channel", label="CBAM channel gates", shape="(C,) one gate in 0..1 per channel",
         layer=ChannelGate, output="gate", keep=_channels, view="cbam", form="channels",
         interventions=GATE_INTERVENTIONS),
    Kind("cbam_spatial", label="CBAM spatial gates", shape="(H, W) one gate in 0..1 per position",
         layer=SpatialGate, output="gate", keep=_spatial, view="cbam", form="map",
         interventions=("spatial-mean", "spatial-invert")),
    Kind("self_attn", label="self-attention layers", shape="(heads, N, N), N = H*W, rows sum to 1",
         layer=SelfAttention2d, output="softmax", keep=_whole, view="self_attn", form="matrix",
         interventions=("attn-uniform", "attn-self"), matrix=True),
    Kind("axial_height", label="axial attention (height steps)",
         shape="(heads, W, H, H): each column's attention along it, rows sum to 1",
         layer=AxialStep, output="softmax", keep=_whole, view="axial", form="steps", matrix=True, axis="height"),
    Kind("axial_width", label="axial attention (width steps)",
         shape="(heads, H, W, W): each row's attention along it, rows sum to 1",
         layer=AxialStep, output="softmax", keep=_whole, view="axial", form="steps", matrix=True, axis="width"),
    Kind("context", label="context maps", shape="(maps, H, W): one weight per position, each map sums to 1",
         layer=None, output="", keep=_whole, view="context", form="maps"),  # timm's GCNet and LambdaNet only
)}

ATTENTION_MATRIX_KINDS = tuple(k.name for k in KINDS.values() if k.matrix)
"""The kinds that are attention matrices (rows sum to 1), which their layer only reads."""

LAYER_TYPES: tuple[type[nn.Module], ...] = tuple(dict.fromkeys(k.layer for k in KINDS.values() if k.layer))
"""attnviz's layers that output a kind: one ``isinstance`` check per module in a capture."""


def kind_of(module: nn.Module) -> Kind | None:
    """The kind that one of attnviz's layers outputs, or None."""
    return next((k for k in KINDS.values() if k.produced_by(module)), None)


def kinds_of_view(view: str) -> tuple[str, ...]:
    """The kinds that the app's view ``view`` draws."""
    return tuple(k.name for k in KINDS.values() if k.view == view)


def kinds_changed_by(intervention: str) -> tuple[str, ...]:
    """The kinds whose outputs ``intervention`` replaces."""
    return tuple(k.name for k in KINDS.values() if intervention in k.interventions)
