"""Does a map point at what the prediction depends on? Two checks, for the CBAM
spatial gate, the self-attention map and Grad-CAM of the same model.

**Deletion** (Petsiuk et al., "RISE", BMVC 2018, https://arxiv.org/abs/1806.07421): blur
the map's most-attended 10 %, 20 %, ... 100 % of the input's pixels and follow the
probability of the class the model predicted for the untouched image. The area under
that curve (fractions 0..1, probabilities 0..1, so the area is in 0..1) is lower when
the probability falls sooner: the map found what the class depends on. The same is
done with a random map on the same grid (seeded), the level of a map that knows
nothing. "Removed" pixels take the value of a strongly blurred copy of the input
(Gaussian, sigma ``BLUR_SIGMA`` of the input side), not black: a black hole is itself
a shape the model may react to. Maps on a feature grid are brought to the input's
pixels bilinearly (as pytorch-grad-cam draws Grad-CAM); ties are broken at random.

**Model randomisation** (Adebayo et al., "Sanity Checks for Saliency Maps", NeurIPS 2018,
https://arxiv.org/abs/1810.03292): re-initialise the last stage (``layer4``), and in a
second copy the last two (``layer3`` and ``layer4``: the self-attention map of
``layer3.1`` lies before ``layer4``, so the first cannot touch it), in copies of the
model, never the model itself; then compare each map with the trained model's by
Spearman rank correlation over its cells. Near 1: the map hardly depends on those
weights, so it cannot explain what they learned. Re-initialised are the weights and
biases of every convolution in those stages, drawn as the model's initialisation draws
them (``AttnResNet._init_weights``: Kaiming normal, fan-out); BatchNorm parameters and
statistics and self-attention's temperatures are kept.

The maps: ``cbam_spatial`` the last CBAM spatial gate (``layer4.1.cbam.spatial.gate``,
7x7 at 224 px); ``self_attn`` the attention each position receives in the last
self-attention layer (``layer3.1.attn.softmax``, 14x14): the mean over heads and over
query positions of the (N, N) matrix (``measure(layer=...)`` chooses another layer);
``grad_cam`` Grad-CAM of ``layer4`` for the predicted class (``attnviz.cam``), for every
model.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torchvision.transforms.functional import gaussian_blur

from .analysis import model_input
from .cam import cam_maps, private_copy, target_layer
from .capture import attention_modules, capture
from .image import ImageError, ImageSource

FRACTIONS = tuple(i / 10 for i in range(11))
"""Fractions of the input's pixels removed along a deletion curve: 0, 0.1, ..., 1."""
BLUR_SIGMA = 0.05
"""Sigma of the Gaussian blur that removed pixels take their value from, as a fraction of
the input side (11.2 px at 224 px): small features and edges are gone, colours stay."""
RANDOMISED = {"layer4": ("layer4",), "layer3-4": ("layer3", "layer4")}
"""Model-randomisation settings: name -> the stages re-initialised."""


def blurred(x: torch.Tensor, sigma: float = BLUR_SIGMA) -> torch.Tensor:
    """(B, 3, S, S) prepared input -> its strongly blurred copy (Gaussian, sigma ``sigma``
    of the side; reflected at the borders). Blurring commutes with the per-channel
    normalisation, so blurring the prepared input equals preparing a blurred image."""
    s = sigma * x.shape[-1]
    k = min(2 * math.ceil(3 * s) + 1, 2 * ((x.shape[-1] - 1) // 2) + 1)  # odd, within the image
    return gaussian_blur(x, [k, k], [s, s])


def to_pixels(grid_map: torch.Tensor, size: int) -> torch.Tensor:
    """(h, w) map on a feature grid -> (size, size) on the model input, bilinear (the
    grid tiles the input uniformly; half-pixel centres)."""
    m = grid_map.detach().float()[None, None]
    return F.interpolate(m, size=(size, size), mode="bilinear", align_corners=False)[0, 0]


def deletion_order(pixel_map: torch.Tensor, rng: np.random.Generator) -> np.ndarray:
    """Flat pixel indices of a (S, S) map, largest value first; equal values in a random order."""
    v = pixel_map.flatten().numpy().astype(np.float64)
    return np.lexsort((rng.random(v.size), -v))


def deletion_inputs(x: torch.Tensor, blur: torch.Tensor, maps: list[torch.Tensor], rng: np.random.Generator,
                    fractions: tuple[float, ...] = FRACTIONS) -> torch.Tensor:
    """The batch of a deletion game for one prepared image ``x`` (1, 3, S, S): ``x`` itself
    (0 % removed), ``blur`` (100 %), then for each (h, w) map of ``maps`` its inner steps
    ``fractions[1:-1]``, each with that fraction of pixels (rounded), the map's largest
    first, replaced by ``blur``. Shape (2 + len(maps) * (len(fractions) - 2), 3, S, S)."""
    size = x.shape[-1]
    n = size * size
    out = [x[0], blur[0]]
    for m in maps:
        order = torch.from_numpy(deletion_order(to_pixels(m, size), rng))
        for f in fractions[1:-1]:
            gone = torch.zeros(n, dtype=torch.bool)
            gone[order[: round(f * n)]] = True
            out.append(torch.where(gone.view(1, size, size), blur[0], x[0]))
    return torch.stack(out)


def deletion_curves(model: nn.Module, x: torch.Tensor, maps: list[torch.Tensor], target: int,
                    rng: np.random.Generator, fractions: tuple[float, ...] = FRACTIONS,
                    sigma: float = BLUR_SIGMA) -> np.ndarray:
    """(len(maps), len(fractions)): the probability of class ``target`` as each map's
    most-attended pixels of ``x`` (1, 3, S, S) are blurred away, all steps in one
    forward pass. Column 0 is the untouched image's probability, the last column the
    wholly blurred image's, the same for every map."""
    batch = deletion_inputs(x, blurred(x, sigma), maps, rng, fractions)
    with torch.inference_mode():
        p = model(batch).float().softmax(-1)[:, target].numpy().astype(np.float64)
    inner = p[2:].reshape(len(maps), len(fractions) - 2)
    return np.concatenate([np.full((len(maps), 1), p[0]), inner, np.full((len(maps), 1), p[1])], axis=1)


def auc(curve: np.ndarray, fractions: tuple[float, ...] = FRACTIONS) -> float:
    """Area under a deletion curve (trapezoids), in 0..1 for probabilities in 0..1."""
    c, f = np.asarray(curve, dtype=np.float64), np.asarray(fractions, dtype=np.float64)
    return float(((c[1:] + c[:-1]) / 2 * np.diff(f)).sum())


def _ranks(v: np.ndarray) -> np.ndarray:
    """1-based ranks, ties given their average rank."""
    _, inverse, counts = np.unique(v, return_inverse=True, return_counts=True)
    return (np.cumsum(counts) - (counts - 1) / 2)[inverse]


def spearman(a: torch.Tensor | np.ndarray, b: torch.Tensor | np.ndarray) -> float:
    """Spearman rank correlation of two maps of one shape, over their cells (ties
    averaged), in -1..1; NaN where either map is constant (no order to compare)."""
    ra = _ranks(np.asarray(a, dtype=np.float64).ravel())
    rb = _ranks(np.asarray(b, dtype=np.float64).ravel())
    if ra.std() == 0 or rb.std() == 0:
        return float("nan")
    return float(np.corrcoef(ra, rb)[0, 1])


def randomized_copy(model: nn.Module, stages: Iterable[str] = ("layer4",), seed: int = 0) -> nn.Module:
    """A private copy of ``model`` (``cam.private_copy``) whose ``stages`` have every
    convolution's weight and bias drawn afresh, as the model's own initialisation does
    (PyTorch's default, then Kaiming normal fan-out on the weight); BatchNorm and all
    else kept. ``model`` is only read; the global random state is left as it was."""
    twin = private_copy(model)
    with torch.random.fork_rng(devices=[]), torch.no_grad():
        torch.manual_seed(seed)
        for stage in stages:
            for m in twin.get_submodule(stage).modules():
                if isinstance(m, nn.Conv2d):
                    m.reset_parameters()
                    nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
    return twin


def map_layers(model: nn.Module, layer: str | None = None) -> dict[str, str]:
    """Map name -> the module it is read from: the last CBAM spatial gate and the last
    self-attention layer where the model has them, and ``layer4`` for Grad-CAM.
    ``layer``: a CBAM spatial gate or self-attention output (``layer3.1.cbam.spatial.gate``,
    or its block ``layer3.1``) to use instead of the last of its kind."""
    found = attention_modules(model)
    out = {}
    for kind in ("cbam_spatial", "self_attn"):
        paths = [p for p, k in found.items() if k == kind]
        if paths:
            out[kind] = paths[-1]
    if layer is not None:
        chosen = [p for p in found if p in (layer, f"{layer}.cbam.spatial.gate", f"{layer}.attn.softmax")
                  and found[p] in out]
        if not chosen:
            known = ", ".join(p for p in found if found[p] in out) or "none"
            raise KeyError(f"no CBAM spatial gate or self-attention layer {layer!r} in the model; it has: {known}")
        out[found[chosen[0]]] = chosen[0]
    out["grad_cam"] = target_layer(model)
    return out


def image_maps(model: nn.Module, cam_model: nn.Module, x: torch.Tensor, layers: dict[str, str],
               target: int | None = None) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
    """(each map of ``layers`` as (h, w) for the one image ``x``, the (num_classes,)
    probabilities of ``model``). ``cam_model``: a private copy of ``model`` that Grad-CAM
    runs on; ``target``: Grad-CAM's class (default: the top-1)."""
    captured = [p for name, p in layers.items() if name != "grad_cam"]
    with torch.inference_mode(), capture(model, captured) as t:
        probs = model(x).float().softmax(-1)[0]
    target = int(probs.argmax()) if target is None else target
    out = {}
    for name, path in layers.items():
        if name == "cbam_spatial":
            out[name] = t[path][0, 0]  # B, 1, h, w -> h, w
        elif name == "self_attn":
            a = t[path][0]  # heads, N, N; rows (queries) sum to 1
            side = math.isqrt(a.shape[-1])
            out[name] = a.mean(0).mean(0).reshape(side, side)  # attention received, over heads and queries
        else:
            out[name] = cam_maps(cam_model, x, [target], layer=path, copy_model=False)[0][0]
    return out, probs


@dataclass
class MapScores:
    """One map's figures, per image: deletion AUC, the random map's AUC on the same grid,
    the mean curves, and the rank correlation after each randomisation of ``RANDOMISED``."""

    layer: str
    grid: tuple[int, int]
    auc: list[float] = field(default_factory=list)
    auc_random: list[float] = field(default_factory=list)
    curves: list[np.ndarray] = field(default_factory=list)
    curves_random: list[np.ndarray] = field(default_factory=list)
    spearman: dict[str, list[float]] = field(default_factory=lambda: {k: [] for k in RANDOMISED})

    def to_json(self) -> dict:
        a, r = np.array(self.auc), np.array(self.auc_random)
        rho = {}
        for k, v in self.spearman.items():
            v = np.array(v)
            ok = v[~np.isnan(v)]
            rho[k] = {"mean": float(ok.mean()) if ok.size else None, "images": int(ok.size),
                      "undefined": int(v.size - ok.size)}
        return {"layer": self.layer, "grid": list(self.grid), "auc": float(a.mean()), "auc_random": float(r.mean()),
                "auc_sd": float(a.std()), "below_random": float((a < r).mean()),
                "curve": np.mean(self.curves, 0).round(6).tolist(),
                "curve_random": np.mean(self.curves_random, 0).round(6).tolist(), "spearman": rho}


@dataclass
class Faithfulness:
    """What ``measure`` found over a folder of images, by map name (``map_layers``)."""

    model: str
    size: int
    seed: int
    maps: dict[str, MapScores]
    images: int = 0
    mean_probability: float = 0.0

    def to_json(self) -> dict:
        return {"model": self.model, "images": self.images, "size": self.size, "seed": self.seed,
                "blur_sigma_px": round(BLUR_SIGMA * self.size, 3), "fractions": list(FRACTIONS),
                "randomised": {k: list(v) for k, v in RANDOMISED.items()},
                "mean_probability": self.mean_probability,
                "maps": {name: s.to_json() for name, s in self.maps.items()}}


def measure(images: Iterable[ImageSource], model: nn.Module, *, size: int | None = None, seed: int = 0,
            layer: str | None = None,
            on_error: Callable[[ImageSource, Exception], None] | None = None) -> Faithfulness:
    """Deletion AUCs and model-randomisation correlations of every map of ``model``
    (``map_layers``, ``layer`` as it takes it) over ``images``, each prepared as
    ``analyze`` prepares it. The random maps and the re-initialised weights come from
    ``seed``: the same images and seed give the same figures. An image that cannot be read goes to ``on_error`` (and
    raises without it). ``model`` is only read."""
    layers = map_layers(model, layer)
    cam_model = private_copy(model)
    randomised = {k: randomized_copy(model, stages, seed) for k, stages in RANDOMISED.items()}
    meta = getattr(model, "attnviz_meta", None)
    scores: dict[str, MapScores] = {}
    probability = 0.0
    result = Faithfulness(model=meta.name if meta else type(model).__name__, size=0, seed=seed, maps=scores)
    for i, src in enumerate(images):
        try:
            _, _, result.size, _, _, x = model_input(src, model, size)
        except (ImageError, ValueError, OSError) as exc:
            if on_error is None:
                raise
            on_error(src, exc)
            continue
        maps, probs = image_maps(model, cam_model, x, layers)
        target = int(probs.argmax())
        rng = np.random.default_rng([seed, i])
        grids = sorted({tuple(m.shape) for m in maps.values()})
        random = {g: torch.from_numpy(rng.random(g)) for g in grids}
        curves = deletion_curves(model, x, [*maps.values(), *random.values()], target, rng)
        by_grid = dict(zip(grids, curves[len(maps):]))
        after = {k: image_maps(r, r, x, layers, target)[0] for k, r in randomised.items()}
        for (name, m), curve in zip(maps.items(), curves):
            s = scores.setdefault(name, MapScores(layer=layers[name], grid=tuple(m.shape)))
            s.curves.append(curve)
            s.curves_random.append(by_grid[tuple(m.shape)])
            s.auc.append(auc(curve))
            s.auc_random.append(auc(by_grid[tuple(m.shape)]))
            for k in RANDOMISED:
                s.spearman[k].append(spearman(m, after[k][name]))
        probability += float(probs[target])
        result.images += 1
    result.mean_probability = probability / result.images if result.images else 0.0
    return result


def stratified(files: list[Path], per_folder: int) -> list[Path]:
    """``per_folder`` files from each folder of ``files`` (an ImageFolder's classes),
    spread evenly over each folder's sorted files; folders in sorted order."""
    if per_folder < 1:
        raise ValueError(f"the images per class must be at least 1, got {per_folder}")
    folders: dict[Path, list[Path]] = {}
    for f in sorted(files):
        folders.setdefault(f.parent, []).append(f)
    out = []
    for group in folders.values():
        k = min(per_folder, len(group))
        out += [group[j * len(group) // k] for j in range(k)]
    return out
