"""Grad-CAM of a model's last stage: what drives one class score, to set beside the
attention maps (where the gates multiply).

Selvaraju et al., "Grad-CAM: Visual Explanations from Deep Networks via Gradient-based
Localization", ICCV 2017, https://arxiv.org/abs/1610.02391, computed by the grad-cam
package (pytorch-grad-cam: ``GradCAM`` with a ``ClassifierOutputTarget``), not by a
copy of it here. For the feature maps A (C, h, w) output by ``layer4`` (7x7 at 224 px)
and the logit y_c of class c:

    cam = ReLU(sum_k w_k A_k),    w_k = mean over the h x w positions of dy_c / dA_k

which the package then min-max normalises per image: 1 is this image's largest value,
0 its smallest. The scale is relative, unlike a gate's (absolute, 0..1) or an attention
weight's (rows sum to 1); figures say so (``figures.CAM_AXIS``).

Two departures from the package's defaults:

- The map stays on the layer's grid, as the CBAM spatial gate does (the package would
  resize it to the input with OpenCV): ``figures.overlay`` draws each cell over the
  rectangle of the original image it covers, with no value interpolated.
- It runs on a private copy of the model (``private_copy``), never on the caller's:
  the package's constructor calls ``model.eval()``, its hooks on the target layer fire
  for every thread's forward passes (the app shares one model between sessions), and
  its backward pass would fill every parameter's ``.grad``. The copy's parameters do
  not require gradients; the input does, so the gradient still reaches ``layer4``.

The package's ``__exit__`` swallows an ``IndexError`` (a class index out of range):
class indices are checked here first. ``pytorch_grad_cam`` is imported only when a map
is computed, so the core imports without it (``pip install "attnviz[cam]"``).
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from .analysis import model_input
from .image import ImageSource
from .loading import build_like
from .weights import WeightsMeta

CAM_LAYER = "layer4"
"""The last stage of attnviz's ResNets (and torchvision's): Grad-CAM's layer for them."""


def private_copy(model: nn.Module) -> nn.Module:
    """A copy of ``model`` that shares no tensor, no hook and no state with it, in eval
    mode, its parameters not requiring gradients.

    A model loaded by attnviz (one with ``attnviz_meta``: its own, a weights pair, a timm
    model) is rebuilt from its metadata (``loading.build_like``) and given its
    ``state_dict``: that only reads parameters and buffers, so it is safe while other
    threads add and remove hooks on the same model (``copy.deepcopy`` copies the hook
    dictionaries, and fails if one changes meanwhile). Any other module is deep-copied,
    without its hooks."""
    if getattr(model, "attnviz_meta", None) is not None:
        twin = build_like(model)
        twin.load_state_dict(model.state_dict(), strict=True)
    else:
        twin = copy.deepcopy(model)
        for m in twin.modules():
            for hooks in (m._forward_hooks, m._forward_pre_hooks, m._backward_hooks, m._backward_pre_hooks):
                hooks.clear()
    return twin.eval().requires_grad_(False)


def target_layer(model: nn.Module) -> str:
    """The module whose output Grad-CAM weighs: the last stage of the backbone, as in the
    Grad-CAM paper. attnviz's ResNets and torchvision's: ``layer4``; a timm model: the last
    entry of its ``feature_info`` (``layer4``, ``final_conv``, ...). ValueError (one line)
    for a model with neither."""
    info = getattr(model, "feature_info", None)
    if isinstance(info, list) and info and isinstance(info[-1], dict) and info[-1].get("module"):
        return str(info[-1]["module"])
    names = dict(model.named_modules())
    if CAM_LAYER in names:
        return CAM_LAYER
    raise ValueError(f"no last stage found for Grad-CAM in a {type(model).__name__} "
                     "(neither timm's feature_info nor a layer4)")


def check_available() -> None:
    """Raise ``ImportError`` with a one-line message where the grad-cam package is missing."""
    try:
        import pytorch_grad_cam  # noqa: F401
    except ImportError:
        raise ImportError("Grad-CAM needs the grad-cam package: pip install 'attnviz[cam]' "
                          "(or grad-cam>=1.5)") from None


def _grid_cam():
    """pytorch-grad-cam's ``GradCAM``, returning each map on the target layer's grid."""
    check_available()
    from pytorch_grad_cam import GradCAM

    class GridGradCAM(GradCAM):
        def get_target_width_height(self, input_tensor: torch.Tensor) -> None:
            return None  # the package's scale_cam_image then min-max normalises without resizing

    return GridGradCAM


def _num_classes(model: nn.Module) -> int | None:
    meta: WeightsMeta | None = getattr(model, "attnviz_meta", None)
    if meta is not None:
        return meta.num_classes
    fc = getattr(model, "fc", None)
    return fc.out_features if isinstance(fc, nn.Linear) else None


def cam_maps(model: nn.Module, x: torch.Tensor, targets: Sequence[int] | None = None, *,
             layer: str | None = None, copy_model: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
    """Grad-CAM of ``model`` for a batch ``x`` (B, 3, H, W), already prepared.

    ``targets``: one class index per image (default: each image's top-1). Returns
    (maps, logits): maps (B, h, w) float32 in 0..1, min-max normalised per image by
    the package (an image whose map is 0 everywhere stays 0), on ``layer``'s grid;
    logits (B, num_classes) of that same forward pass. ``copy_model=False`` runs on
    ``model`` itself: only for a model the caller owns (from ``private_copy``)."""
    layer = layer or target_layer(model)
    modules = dict(model.named_modules())
    if layer not in modules:
        stages = ", ".join(n for n in modules if n.startswith("layer") and "." not in n) or "none"
        raise KeyError(f"no module {layer!r} in the model for Grad-CAM; its stages are: {stages}")
    n = _num_classes(model)
    if targets is not None:
        targets = [int(t) for t in targets]
        if len(targets) != len(x):
            raise ValueError(f"{len(targets)} target classes for {len(x)} images")
        if n is not None and any(not 0 <= t < n for t in targets):
            raise ValueError(f"class index out of range: the model has {n} classes (0 to {n - 1})")
    grid_cam = _grid_cam()
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

    # Tensors made under an enclosing inference_mode cannot enter autograd.
    with torch.inference_mode(False), torch.enable_grad():
        own = private_copy(model) if copy_model else model
        target = own.get_submodule(layer)
        inp = x.detach().clone().requires_grad_(True)
        maps = None
        with grid_cam(own, [target]) as cam:
            maps = cam(inp, None if targets is None else [ClassifierOutputTarget(t) for t in targets])
            logits = cam.outputs.detach().float()
    if maps is None:  # the package's __exit__ swallowed an IndexError
        raise ValueError("Grad-CAM failed: a class index out of range for the model's output")
    return torch.from_numpy(np.ascontiguousarray(maps, dtype=np.float32)), logits


@dataclass
class CAMResult:
    """Grad-CAM of one image. ``map``: (h, w) float32 in 0..1 on ``layer``'s grid, min-max
    normalised per image (relative, not absolute); ``target``: the class index it is for,
    ``class_name`` its name and ``probability`` its softmax probability for this image."""

    map: torch.Tensor
    layer: str
    target: int
    class_name: str
    probability: float


def grad_cam(image: ImageSource, model: nn.Module | str, target: int | str | None = None, *,
             layer: str | None = None, size: int | None = None) -> CAMResult:
    """Grad-CAM of ``model`` (a module or a model's name) for ``image`` at ``layer``.

    The image is prepared as ``analyze`` prepares it (``size``: default the model's), so
    the map's grid covers the original image as every other map of its ``Analysis``
    does: draw it with ``figures.overlay(a.display, result.map, extent=a.image_size)``.
    ``target``: a class name or index (default: the top-1). ``model`` is only read
    (see ``private_copy``). Raises ``ValueError``/``KeyError``/``ImageError`` with a
    one-line message for a bad setting."""
    model, meta, _, _, _, x = model_input(image, model, size)
    classes = list(meta.classes) if meta else None
    index = None
    if isinstance(target, str):
        if classes is None or target not in classes:
            known = ", ".join(classes[:20]) if classes else "no class names (use an index)"
            raise KeyError(f"unknown class {target!r}; the model knows: {known}")
        index = classes.index(target)
    elif target is not None:
        index = int(target)
    layer = layer or target_layer(model)
    maps, logits = cam_maps(model, x, None if index is None else [index], layer=layer)
    probs = logits.softmax(-1)[0]
    index = int(probs.argmax()) if index is None else index
    name = classes[index] if classes else f"class {index}"
    return CAMResult(map=maps[0], layer=layer, target=index, class_name=name, probability=float(probs[index]))
