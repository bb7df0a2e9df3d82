"""Loading a model by name, whatever its source: the one place that reads a name.

| name | source | module |
|---|---|---|
| ``resnet18``, ``se_resnet18``, ... | a weights pair: shipped, or in ``ATTNVIZ_WEIGHTS_DIR`` | ``weights`` |
| ``timm:ARCH[.TAG]`` | timm's: a local file, the Hugging Face cache, a download if asked, random | ``timm_adapter`` |
| ``cbam:resnet50`` | the CBAM authors' ResNet-50: their released checkpoint file, random weights | ``official_cbam`` |

Each source is one row of ``SOURCES``: a name's prefix, how to load it, and how to build
an untrained twin of a loaded model (``build_like``: Grad-CAM's private copy, the
faithfulness randomisation). Everything else in attnviz takes a loaded model, never a
name, so a model is what it was loaded as, wherever it is used.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

from .weights import WeightsError, WeightsMeta, find_weights, load_pair


@dataclass(frozen=True)
class Source:
    """One way of naming a model: names that start with ``prefix`` (``""``: the rest)."""

    prefix: str
    load: Callable[[str, str | os.PathLike | None, bool, bool], nn.Module]  # name, checkpoint, pretrained, download
    build: Callable[[WeightsMeta], nn.Module]
    describe: str


def _load_pair_by_name(name: str, checkpoint, pretrained: bool, download: bool) -> nn.Module:
    # download: nothing to fetch, a weights pair is local
    if checkpoint is not None:
        raise WeightsError("checkpoint= is for timm models (timm:NAME); attnviz's own models load by name")
    found = find_weights()
    if name not in found:
        known = ", ".join(sorted(found)) or "none"
        raise WeightsError(f"unknown model {name!r}; available: {known}")
    return load_pair(found[name])[0]


def _build_own(meta: WeightsMeta) -> nn.Module:
    return meta.build()


def _load_timm(name: str, checkpoint, pretrained: bool, download: bool) -> nn.Module:
    from . import timm_adapter

    return timm_adapter.load(name, checkpoint, pretrained, download)


def _build_timm(meta: WeightsMeta) -> nn.Module:
    from . import timm_adapter

    return timm_adapter.build(meta.arch, meta.num_classes)


def _load_official_cbam(name: str, checkpoint, pretrained: bool, download: bool) -> nn.Module:
    from . import official_cbam

    return official_cbam.load(name, checkpoint, pretrained, download)


def _build_official_cbam(meta: WeightsMeta) -> nn.Module:
    from . import official_cbam

    return official_cbam.build(meta.arch, meta.num_classes)


SOURCES: tuple[Source, ...] = (
    Source("timm:", _load_timm, _build_timm, "a timm architecture (timm:ARCH or timm:ARCH.TAG)"),
    Source("cbam:", _load_official_cbam, _build_official_cbam,
           "the CBAM authors' ResNet-50 and their checkpoint (cbam:resnet50)"),
    Source("", _load_pair_by_name, _build_own, "a weights pair (shipped or in ATTNVIZ_WEIGHTS_DIR)"),
)


def source_of(name: str) -> Source:
    """The row of ``SOURCES`` that a model name or architecture belongs to."""
    return next(s for s in SOURCES if name.startswith(s.prefix))


def load_model(name: str, checkpoint: str | os.PathLike | None = None, pretrained: bool = True,
               download: bool = False) -> nn.Module:
    """The named model, in eval mode, weights verified, metadata at ``.attnviz_meta``.

    A plain name is a weights pair (shipped, or in ``ATTNVIZ_WEIGHTS_DIR``); ``timm:ARCH``
    or ``timm:ARCH.TAG`` (e.g. ``timm:seresnet50.ra2_in1k``) is a timm model: its weights
    from the local file ``checkpoint`` or, without one, the local Hugging Face cache, or with
    ``pretrained=False`` random weights (``attnviz.timm_adapter``). Only with
    ``download=True`` are weights missing from the cache downloaded from the hub, into that
    cache, so that later loads find them offline. ``cbam:resnet50`` is the CBAM authors'
    ResNet-50 with their released ``checkpoint`` (``attnviz.official_cbam``).
    Raises ``WeightsError`` (one line) for anything that cannot be loaded."""
    return source_of(name).load(name, checkpoint, pretrained, download)


def available_models() -> list[str]:
    """Names of the weights pairs that ``load_model`` can load, sorted."""
    return sorted(find_weights())


def build_like(model: nn.Module) -> nn.Module:
    """A new, randomly initialised model of ``model``'s architecture, in eval mode, with
    the same metadata; the caller's random state is left alone. Loading ``model``'s
    ``state_dict`` into it gives a private copy that shares no tensor or hook with it."""
    meta: WeightsMeta | None = getattr(model, "attnviz_meta", None)
    if meta is None:
        raise ValueError(f"a {type(model).__name__} was not loaded by attnviz: no architecture to rebuild it from")
    with torch.random.fork_rng(devices=[]):
        twin = source_of(meta.arch).build(meta)
    twin.attnviz_meta = meta
    return twin.eval()
