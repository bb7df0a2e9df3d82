"""One image through one model: predictions and every attention tensor, kept so that
any later question (a clicked pixel, an overlay) is an index, not a forward pass."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from functools import cached_property

import numpy as np
import torch
from PIL import Image
from torch import nn

from .attention_quality import head_quality, step_rows
from .capture import capture
from .image import ImageSource, display_image, feature_cell, grid_to_image, open_image, prepare
from .kinds import KINDS
from .layers.axial import compose
from .limits import MAX_COMPOSED_MB
from .loading import load_model
from .weights import IMAGENET_MEAN, IMAGENET_STD, WeightsMeta


@dataclass
class Analysis:
    """The result of ``analyze``. Tensors are float32 on the CPU, batch dimension removed.

    - ``probs``: (num_classes,) softmax probabilities;
    - ``se``: SE block path -> (C,) gates in 0..1;
    - ``cbam_channel``: CBAM block path -> (C,) channel gates in 0..1;
    - ``cbam_spatial``: CBAM block path -> (H, W) spatial gate in 0..1;
    - ``self_attn``: attention layer path -> (heads, N, N), N = H*W, rows sum to 1;
      ``self_attn_grid`` gives each layer's (H, W). For an axial attention layer
      (key: the layer's path, ``layer1.1.axial``) it is the composed map of its two
      steps (``layers.axial.compose``): how much each position contributes to the query
      after the height step and the width step, every entry > 0;
    - ``axial_height``: height step path -> (heads, W, H, H), for each column each head's
      attention over its H cells, rows sum to 1;
    - ``axial_width``: width step path -> (heads, H, W, W), the same per row.
    - ``context`` (timm's GCNet and LambdaNet): path -> (maps, H, W), each map sums to 1
      over the positions and is the same for every query: no per-query map.
    Keys are the paths of the hooked modules (``layer1.0.se.gate``, ...), but for the
    composed axial maps. ``axial_steps`` pairs a composed map with its two steps.

    Pixel coordinates (``cell``, ``query``, ``to_image``) are those of the original
    image, ``image_size``, also when ``image`` (what the model saw, squashed) was
    downscaled on load to the pixel budget.
    """

    image: Image.Image
    model_name: str
    classes: list[str]
    size: int
    probs: torch.Tensor
    maps: dict[str, dict[str, torch.Tensor]] = field(default_factory=lambda: {k: {} for k in KINDS})
    self_attn_grid: dict[str, tuple[int, int]] = field(default_factory=dict)
    meta: WeightsMeta | None = None
    original_size: tuple[int, int] | None = None

    def __getattr__(self, name: str) -> dict[str, torch.Tensor]:
        maps = self.__dict__.get("maps")
        if maps is not None and name in KINDS:  # a.se, a.self_attn, ...: that kind's maps
            return maps.setdefault(name, {})
        raise AttributeError(f"{type(self).__name__!r} object has no attribute {name!r}")

    @property
    def image_size(self) -> tuple[int, int]:
        """(width, height) of the original image (upright): the pixel coordinates of
        ``cell``, ``query`` and ``to_image``."""
        return self.original_size or self.image.size

    @cached_property
    def display(self) -> Image.Image:
        """A copy of the image at most ``image.DISPLAY_MAX_SIDE`` px, for drawing:
        made once, so that redrawing a figure (a click) never resizes a large photo."""
        return display_image(self.image)

    @cached_property
    def quality(self) -> dict:
        """Self-attention layer -> each head's ``HeadQuality`` in this image (entropy ÷
        log N, query-dependence), computed once: every click redraws with them. An axial
        layer has its composed map's figures under its own path and each step's under the
        step's path (``attention_rows``)."""
        return {layer: head_quality(t) for layer, t in self.attention_rows().items()}

    def attention_rows(self) -> dict[str, torch.Tensor]:
        """Every attention matrix the quality figures apply to, path -> (heads, queries,
        keys): ``self_attn`` (composed axial maps included), then each axial step's rows
        (``attention_quality.step_rows``)."""
        steps = {**self.axial_height, **self.axial_width}
        return {**self.self_attn, **{path: step_rows(t) for path, t in steps.items()}}

    def axial_steps(self, layer: str) -> tuple[str, str]:
        """(height step path, width step path) of the axial layer ``layer`` (a key of
        ``self_attn``); KeyError for a layer that is not axial."""
        steps = (f"{layer}.height.softmax", f"{layer}.width.softmax")
        if steps[0] not in self.axial_height or steps[1] not in self.axial_width:
            raise KeyError(f"{layer!r} is not an axial attention layer of this model")
        return steps

    def axial_query(self, layer: str, x: float, y: float) -> tuple[torch.Tensor, torch.Tensor]:
        """(heads, H) and (heads, W): where the feature cell (row, col) under pixel (x, y)
        looks in each step of the axial ``layer``: the height step along column col, the
        width step along row row; each head's weights sum to 1."""
        height, width = self.axial_steps(layer)
        row, col = self.cell(layer, x, y)
        return self.axial_height[height][:, col, row, :], self.axial_width[width][:, row, col, :]

    def top_k(self, k: int = 5) -> list[tuple[str, float]]:
        """The ``k`` most probable classes as (name, probability), best first."""
        p, i = self.probs.topk(min(k, len(self.probs)))
        return [(self.classes[j], float(q)) for q, j in zip(p.tolist(), i.tolist())]

    def cell(self, layer: str, x: float, y: float) -> tuple[int, int]:
        """(row, col) of ``layer``'s feature cell under pixel (x, y) of the image."""
        return feature_cell(x, y, self.image_size, self._grid(layer))

    def query(self, layer: str, x: float, y: float) -> torch.Tensor:
        """(heads, H, W): where the feature cell under pixel (x, y) of the original
        image attends in self-attention ``layer``; each head's map sums to 1."""
        h, w = self._grid(layer)
        row, col = self.cell(layer, x, y)
        return self.self_attn[layer][:, row * w + col, :].reshape(-1, h, w)

    def to_image(self, grid_map: torch.Tensor | np.ndarray) -> np.ndarray:
        """An (H, W) map on a feature grid -> (height, width) over the original image."""
        values = grid_map.numpy() if isinstance(grid_map, torch.Tensor) else np.asarray(grid_map)
        return grid_to_image(values, self.image_size)

    def _grid(self, layer: str) -> tuple[int, int]:
        if layer in self.self_attn_grid:
            return self.self_attn_grid[layer]
        if layer in self.cbam_spatial:
            return tuple(self.cbam_spatial[layer].shape)
        known = ", ".join([*self.self_attn_grid, *self.cbam_spatial]) or "none"
        raise KeyError(f"no spatial attention layer {layer!r}; this model has: {known}")

    @property
    def nbytes(self) -> int:
        """Memory held by the tensors and the image (for bounded caches)."""
        tensors = [self.probs, *(t for kept in self.maps.values() for t in kept.values())]
        images = [self.image, *([self.__dict__["display"]] if "display" in self.__dict__ else [])]
        return sum(t.numel() * t.element_size() for t in tensors) + sum(i.width * i.height * 3 for i in images)


def _grid_of(n: int, size: int) -> tuple[int, int]:
    """The (H, W) of a square input's feature map with N = H*W positions."""
    side = math.isqrt(n)
    if side * side != n:
        raise ValueError(f"{n} positions do not form a square grid for a {size}px input")
    return side, side


def model_input(image: ImageSource, model: nn.Module | str, size: int | None = None):
    """What ``analyze`` feeds ``model``: (model, its metadata or None, input size, the
    decoded image, its original size, the (1, 3, size, size) tensor). ``model`` may be a
    name; a model in training mode, a size outside 32..1024 or bad input raise one line."""
    if isinstance(model, str):
        model = load_model(model)
    if model.training:
        raise ValueError("the model is in training mode; call model.eval() first "
                         "(BatchNorm would use batch statistics)")
    meta: WeightsMeta | None = getattr(model, "attnviz_meta", None)
    size = int(size or (meta.input_size if meta else 224))
    if not 32 <= size <= 1024:
        raise ValueError(f"input size must be between 32 and 1024 pixels, got {size}")
    im, original_size = open_image(image, for_size=size)
    x = prepare(im, size, meta.mean if meta else IMAGENET_MEAN, meta.std if meta else IMAGENET_STD,
                meta.interpolation if meta else "bilinear")
    return model, meta, size, im, original_size, x


def analyze(image: ImageSource, model: nn.Module | str, size: int | None = None) -> Analysis:
    """Run one image through ``model`` (a module or the name of a shipped/user model)
    and capture every attention tensor.

    ``image``: a path, bytes or PIL image of any mode; EXIF orientation is applied and
    the whole image is squashed onto the model's ``size`` x ``size`` input (default:
    the size in the model's metadata, else 224). Raises ``ImageError`` for bad input.
    """
    model, meta, size, im, original_size, x = model_input(image, model, size)
    try:
        with torch.inference_mode(), capture(model) as maps:
            logits = model(x)
    except AssertionError:  # timm's shape checks: BoTNet's and HaloNet's layers are built for one size
        if meta is not None and size == meta.input_size:
            raise  # at the model's own size an assertion is a bug, not a wrong setting: let it show
        name, own = (meta.name, f"; its own size is {meta.input_size}px") if meta else (type(model).__name__, "")
        raise ValueError(f"{name} does not run at a {size}px input{own}") from None
    probs = logits.float().softmax(-1)[0]
    classes = list(meta.classes) if meta else [f"class {i}" for i in range(len(probs))]
    result = Analysis(image=im, model_name=meta.name if meta else type(model).__name__,
                      classes=classes, size=size, probs=probs, meta=meta, original_size=original_size)
    for kind in KINDS.values():
        for path, t in maps.of_kind(kind.name).items():
            result.maps[kind.name][path] = kind.keep(t, 0)
    for path, t in result.self_attn.items():
        result.self_attn_grid[path] = _grid_of(t.shape[-1], size)
    for layer, (height, width) in axial_layers(maps).items():
        heads, w, h, _ = height.shape[1:]
        mb = heads * (h * w) ** 2 * 4 / 2**20
        if mb > MAX_COMPOSED_MB:
            raise ValueError(f"{layer}: the composed axial map of a {h}x{w} grid would take {mb:,.0f} MB "
                             f"(at most {MAX_COMPOSED_MB}); use a smaller input size than {size}px")
        result.self_attn[layer] = compose(height[0], width[0])
        result.self_attn_grid[layer] = (h, w)
    return result


def axial_layers(maps) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """Axial layer path -> (height step, width step) weights, from a ``capture``'s maps:
    (B, heads, W, H, H) and (B, heads, H, W, W)."""
    suffix = ".height.softmax"
    return {path.removesuffix(suffix): (t, maps[path.removesuffix(suffix) + ".width.softmax"])
            for path, t in maps.of_kind("axial_height").items()}
