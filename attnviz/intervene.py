"""Interventions: run an image a second time with one kind of attention changed, and
compare the predictions before and after.

    r = attnviz.intervene("photo.jpg", "se_resnet18", "gates-off", layer="layer3.1")
    r.top_k(5), r.top_k(5, after=True), r.delta   # the predicted class: p before, p after

Each intervention is a forward hook that returns a replacement for the output of an
attention module, the tensor its block multiplies or mixes the features with:

- SE and CBAM channel gates (``….se.gate``, ``….cbam.channel.gate``, (B, C, 1, 1)):
  ``gates-off`` sets every gate to 1 (the block without attention), ``gates-mean`` to the
  class-agnostic mean gate of the SE excitation profile shipped with the model (the mean
  over its classes' mean gates, the same for every image), ``knockout-top`` sets the
  ``k`` largest gates of each image to 0;
- CBAM spatial gates (``….cbam.spatial.gate``, (B, 1, H, W)): ``spatial-mean`` replaces
  the map by its mean (the same weight everywhere: no "where"), ``spatial-invert`` by
  1 - map;
- self-attention (``….attn.softmax``, (B, heads, N, N), rows sum to 1): ``attn-uniform``
  makes every row 1/N (an average pool), ``attn-self`` the identity (each position takes
  only its own value: no mixing).

The model is never edited (no ``eval()``, no new attributes, no weights touched): the
hooks are registered on entry of ``intervention`` and always removed on exit, also when
the forward pass raises. As ``capture``'s, they act only on forward passes run by the
thread that opened the ``intervention``, so other threads sharing a cached model are
not affected. A ``capture`` opened inside an ``intervention`` records the replaced tensors.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from .analysis import model_input
from .capture import ThreadBoundHooks, _attention_outputs, resolve
from .image import ImageSource
from .kinds import KINDS, kinds_changed_by
from .profile import SEProfile, profile_path
from .weights import WeightsMeta, find_weights

INTERVENTIONS = ("gates-off", "gates-mean", "knockout-top", "spatial-mean", "spatial-invert",
                 "attn-uniform", "attn-self")
"""Every kind of intervention, as ``intervene(what=...)`` and ``attnviz intervene --what`` take it."""

DEFAULT_K = 8
"""Channels ``knockout-top`` sets to 0 in each block unless told otherwise."""

# Intervention -> the attention kinds whose outputs it replaces (``kinds.KINDS`` says).
_CHANGES = {what: kinds_changed_by(what) for what in INTERVENTIONS}


def _what_it_needs(what: str) -> str:
    return " or ".join(KINDS[k].label for k in _CHANGES[what])


def _model_name(model: nn.Module) -> str:
    meta: WeightsMeta | None = getattr(model, "attnviz_meta", None)
    return meta.name if meta else type(model).__name__


def shipped_profile(model: nn.Module) -> SEProfile | None:
    """The SE excitation profile shipped next to the weights of ``model``
    (``<name>.profile.json``), or None where there is none (CBAM, a user's model)."""
    meta: WeightsMeta | None = getattr(model, "attnviz_meta", None)
    weights = find_weights().get(meta.name) if meta else None
    if weights is not None and WeightsMeta.from_json(weights.with_suffix(".json")).sha256 != meta.sha256:
        return None  # another model under the same name (a user's upload): the profile is not its
    path = profile_path(weights) if weights else None
    if path is None or not path.is_file():
        return None
    try:
        prof = SEProfile.from_json(path)
    except (OSError, ValueError, TypeError) as exc:  # ValueError: bad JSON; TypeError: wrong keys
        raise ValueError(f"{Path(path).name}: not a readable SE profile ({exc})") from None
    return prof if prof.model == meta.name else None


def _mean_gates(model: nn.Module, layers: list[str], profile: SEProfile | None) -> dict[str, torch.Tensor]:
    """Gate path -> (C,) class-agnostic mean gate: the unweighted mean of the profile's
    per-class mean gates (a profile does not record how many images each class had)."""
    name = _model_name(model)
    if profile is None:
        raise ValueError(f"{name} has no SE excitation profile (<model>.profile.json next to its weights, "
                         "written by `attnviz profile` for SE models): gates-mean needs its mean gates")
    missing = [p for p in layers if p not in profile.means]
    if missing:
        raise ValueError(f"the SE profile of {profile.model} has no mean gates for {', '.join(missing)}: "
                         "gates-mean needs a profile of this model")
    return {p: torch.tensor(profile.means[p], dtype=torch.float64).mean(0).float() for p in layers}


def _select(model: nn.Module, what: str, layer: str | None) -> dict[str, nn.Module]:
    """The modules ``what`` changes: every one of its kinds, or those at or under ``layer``
    (a module path such as ``layer3.1.se.gate``, or a prefix such as ``layer3.1``)."""
    kinds = _CHANGES[what]
    found = _attention_outputs(model)
    # Only outputs that are the hooked module's own output can be replaced; what a timm
    # layer computes inline (ECA's reshape, BoTNet's softmax: ``timm_adapter``) is recorded, not replaceable.
    candidates = [p for p, (kind, _, extract) in found.items() if kind in kinds and extract is None]
    if not candidates and any(kind in kinds and extract is not None for kind, _, extract in found.values()):
        raise ValueError(f"{_model_name(model)}: its {_what_it_needs(what)} are computed inside timm's layers, "
                         f"where attnviz records them but cannot replace them: nothing for {what} to change")
    if not candidates:
        raise ValueError(f"{_model_name(model)} has no {_what_it_needs(what)}: nothing for {what} to change")
    if layer is not None:
        chosen = [p for p in candidates if p == layer or p.startswith(layer + ".")]
        if not chosen:
            block = ".".join(candidates[0].split(".")[:2])
            raise KeyError(f"no layer {layer!r} for {what} in {_model_name(model)}; "
                           f"choose a block (e.g. {block}) or one of: {', '.join(candidates)}")
        candidates = chosen
    return resolve(model, candidates)


Replace = Callable[[str, torch.Tensor], torch.Tensor]


def _replacement(what: str, k: int, means: dict[str, torch.Tensor]) -> Replace:
    """(module path, output) -> the tensor that takes the output's place, same shape and dtype."""
    if what == "gates-off":
        return lambda path, g: torch.ones_like(g)
    if what == "gates-mean":
        def mean(path: str, g: torch.Tensor) -> torch.Tensor:  # B, C, 1, 1
            m = means[path]
            if m.numel() != g.shape[1]:
                raise ValueError(f"the SE profile has {m.numel()} mean gates for {path}, "
                                 f"but the model has {g.shape[1]} channels there")
            return m.to(g).view(1, -1, 1, 1).expand_as(g).contiguous()
        return mean
    if what == "knockout-top":
        def knockout(path: str, g: torch.Tensor) -> torch.Tensor:  # B, C, 1, 1
            b, c = g.shape[:2]
            if k > c:
                raise ValueError(f"k = {k} is more than the {c} channels of {path}")
            flat = g.reshape(b, c).clone()
            return flat.scatter_(1, flat.topk(k, dim=1).indices, 0.0).view_as(g)
        return knockout
    if what == "spatial-mean":
        return lambda path, g: g.mean((2, 3), keepdim=True).expand_as(g).contiguous()  # B, 1, H, W
    if what == "spatial-invert":
        return lambda path, g: 1 - g
    if what == "attn-uniform":
        return lambda path, a: torch.full_like(a, 1.0 / a.shape[-1])  # B, heads, N, N
    if what == "attn-self":
        return lambda path, a: torch.eye(a.shape[-1], dtype=a.dtype, device=a.device).expand_as(a).contiguous()
    raise AssertionError(what)  # checked by ``intervention``


class intervention(ThreadBoundHooks):  # noqa: N801 - used like a function: ``with intervention(model, "gates-off")``
    """Context manager that changes ``model``'s attention (``what``, one of
    ``INTERVENTIONS``) in the forward passes run inside it, through forward hooks.

    ``layer``: only the modules at or under this path (``layer3.1`` or
    ``layer3.1.se.gate``); default: every module of the kind ``what`` changes.
    ``k``: channels ``knockout-top`` sets to 0 per block (default ``DEFAULT_K``).
    ``profile``: the SE profile ``gates-mean`` takes its mean gates from (default: the one
    shipped with the model). Every wrong setting raises ``ValueError``/``KeyError`` with a
    one-line message here, before any hook exists; ``k`` larger than a block's channel
    count, in the forward pass. ``layers``: the paths of the changed modules.
    """

    def __init__(self, model: nn.Module, what: str, layer: str | None = None, *, k: int | None = None,
                 profile: SEProfile | None = None) -> None:
        if what not in INTERVENTIONS:
            raise ValueError(f"unknown intervention {what!r}; one of: {', '.join(INTERVENTIONS)}")
        super().__init__()
        if k is not None and what != "knockout-top":
            raise ValueError(f"k applies only to knockout-top, not to {what}")
        k = DEFAULT_K if k is None else k
        if k < 1:
            raise ValueError(f"k must be at least 1, got {k}")
        self.model, self.what, self.k = model, what, k
        self._modules = _select(model, what, layer)
        self.layers = list(self._modules)
        means = {}
        if what == "gates-mean":
            means = _mean_gates(model, self.layers, profile if profile is not None else shipped_profile(model))
        self._replace = _replacement(what, k, means)

    def _hooks(self) -> Iterator[tuple[nn.Module, Callable]]:
        for path in self._modules:
            yield self._modules[path], self._hook(path)

    def _hook(self, path: str):
        def hook(module: nn.Module, inputs: tuple, output: torch.Tensor) -> torch.Tensor | None:
            if not self._mine():
                return None  # another thread's forward pass on a shared model: unchanged
            return self._replace(path, output)

        return hook

    def __enter__(self) -> list[str]:
        super().__enter__()
        return self.layers


@dataclass
class InterventionResult:
    """What ``intervene`` measured. ``before``/``after``: (num_classes,) softmax
    probabilities without and with the intervention, float32 on the CPU; ``target``:
    the index of the class whose change ``delta`` reports (before's top-1 unless chosen)."""

    model_name: str
    what: str
    layers: list[str]
    classes: list[str]
    before: torch.Tensor
    after: torch.Tensor
    target: int
    k: int | None = None

    def top_k(self, k: int = 5, *, after: bool = False) -> list[tuple[str, float]]:
        """The ``k`` most probable classes as (name, probability), best first."""
        probs = self.after if after else self.before
        p, i = probs.topk(min(k, len(probs)))
        return [(self.classes[j], float(q)) for q, j in zip(p.tolist(), i.tolist())]

    @property
    def delta(self) -> tuple[str, float, float]:
        """(class, probability before, probability after) of the ``target`` class."""
        return self.classes[self.target], float(self.before[self.target]), float(self.after[self.target])

    def to_json(self) -> dict:
        """``{"before": [[class, p], ...5], "after": [...5], "what", "layers"}``, the
        CLI's contract, plus ``model``, ``delta`` (``{"class", "before", "after"}``) and,
        for ``knockout-top``, ``k``."""
        name, p_before, p_after = self.delta
        out = {"before": [list(t) for t in self.top_k(5)], "after": [list(t) for t in self.top_k(5, after=True)],
               "what": self.what, "layers": list(self.layers), "model": self.model_name,
               "delta": {"class": name, "before": p_before, "after": p_after}}
        if self.k is not None:
            out["k"] = self.k
        return out


def intervene(
    image: ImageSource,
    model: nn.Module | str,
    what: str,
    layer: str | None = None,
    *,
    k: int | None = None,
    size: int | None = None,
    target: str | None = None,
    profile: SEProfile | None = None,
) -> InterventionResult:
    """Run ``image`` through ``model`` (a module or a model's name) as it is and with the
    intervention ``what`` (one of ``INTERVENTIONS``; ``layer``, ``k``, ``profile`` as
    ``intervention`` takes them), and return both predictions.

    The image is prepared as ``analyze`` prepares it (``size``: default the model's), so
    ``before`` equals ``analyze(image, model).probs``. ``target``: the class name whose
    change ``delta`` reports, e.g. the true class (default: the top-1 before). Raises
    ``ValueError``/``KeyError``/``ImageError`` with a one-line message for a bad setting.
    """
    model, meta, _, _, _, x = model_input(image, model, size)
    changed = intervention(model, what, layer, k=k, profile=profile)  # every setting checked before a forward
    classes = list(meta.classes) if meta else None
    if target is not None and classes is not None and target not in classes:
        shown = ", ".join(classes[:20]) + (", ..." if len(classes) > 20 else "")
        raise KeyError(f"unknown class {target!r}; {_model_name(model)} knows: {shown}")
    with torch.inference_mode():
        before = model(x).float().softmax(-1)[0]
        with changed:
            after = model(x).float().softmax(-1)[0]
    if classes is None:
        classes = [f"class {i}" for i in range(len(before))]
    if target is not None and target not in classes:
        raise KeyError(f"unknown class {target!r}; the model's classes are 'class 0' to 'class {len(classes) - 1}'")
    index = classes.index(target) if target is not None else int(before.argmax())
    return InterventionResult(model_name=_model_name(model), what=what, layers=changed.layers, classes=classes,
                              before=before, after=after, target=index,
                              k=changed.k if what == "knockout-top" else None)
