"""Capture the attention tensors a forward pass computes, through forward hooks.

    with attnviz.capture(model) as maps:
        model(x)
    maps["layer1.0.se.gate"]  # (B, C, 1, 1), exactly what multiplied the features

Hooks are registered on entry and always removed on exit, also when the body raises.
The model is not changed (no ``eval()``, no new attributes). Captured gates are
``detach().float().cpu().clone()`` so that a later in-place op cannot alter them; the
attention matrix, which its layer only reads, is kept as ``detach().float().cpu()``.
Hooks only record forward passes run by the thread that opened the ``capture``, so
several threads may capture on one shared model at once, each seeing its own tensors.
"""

from __future__ import annotations

import sys
import threading
from collections.abc import Callable, Iterable, Iterator, Mapping
from types import TracebackType

import torch
from torch import nn
from torch.utils.hooks import RemovableHandle

from .layers import ChannelGate, SelfAttention2d, SpatialGate, SqueezeExcite

KINDS = ("se", "cbam_channel", "cbam_spatial", "self_attn", "context")


def attention_modules(model: nn.Module) -> dict[str, str]:
    """Path of every hookable attention output in ``model`` -> its kind:

    - ``se``: ``….se.gate``, SE gates (B, C, 1, 1) in 0..1;
    - ``cbam_channel``: ``….cbam.channel.gate``, (B, C, 1, 1) in 0..1;
    - ``cbam_spatial``: ``….cbam.spatial.gate``, (B, 1, H, W) in 0..1;
    - ``self_attn``: ``….attn.softmax``, (B, heads, N, N), rows sum to 1;
    - ``context`` (timm models only): (B, maps, H, W), each map sums to 1 over the
      positions, the same for every query (GCNet's context, LambdaNet's keys).

    A timm model's modules are found by ``timm_adapter`` (see there for what is hooked).
    """
    return {path: kind for path, (kind, _, _) in _attention_outputs(model).items()}


_OUTPUT_OF = ((SqueezeExcite, "gate", "se"), (ChannelGate, "gate", "cbam_channel"),
              (SpatialGate, "gate", "cbam_spatial"), (SelfAttention2d, "softmax", "self_attn"))
_CLASSES = tuple(cls for cls, _, _ in _OUTPUT_OF)


def _attention_outputs(model: nn.Module) -> dict[str, tuple[str, nn.Module, Callable | None]]:
    """Path -> (kind, module, extract) of every hookable attention output, in one walk, in
    the order of ``named_modules``. ``extract`` (timm modules only, else None) turns the
    hook's (module, inputs, output) into the tensor to record (``timm_adapter``). Walked
    by hand: ``named_modules``' nested generators cost several times as much, and this
    runs on every ``capture``."""
    found = {}
    stack: list[tuple[str, nn.Module]] = [("", model)]
    seen: set[int] = set()
    while stack:
        path, m = stack.pop()
        if id(m) in seen:  # a module shared under two names is visited once, as there
            continue
        seen.add(id(m))
        if isinstance(m, _CLASSES):  # most modules: one check, not one per class
            kind, output = next((kind, output) for cls, output, kind in _OUTPUT_OF if isinstance(m, cls))
            found[f"{path}.{output}" if path else output] = (kind, getattr(m, output), None)
        stack.extend((f"{path}.{name}" if path else name, child)
                     for name, child in reversed(m._modules.items()) if child is not None)
    if "timm" in sys.modules:  # a model may hold timm layers only if timm was imported
        from . import timm_adapter

        found.update(timm_adapter.attention_outputs(model))
    return found


def resolve(model: nn.Module, names: Iterable[str]) -> dict[str, nn.Module]:
    """Modules of ``model`` by path; a wrong name fails with the list of what exists."""
    modules = dict(model.named_modules())
    out = {}
    for name in names:
        if name not in modules:
            hookable = ", ".join(attention_modules(model)) or "none"
            raise KeyError(f"no module {name!r} in the model; attention outputs are: {hookable}")
        out[name] = modules[name]
    return out


class Captured(Mapping[str, torch.Tensor]):
    """Module path -> captured output. Several forward passes in one ``capture``
    are concatenated along the batch dimension."""

    def __init__(self, kinds: dict[str, str]) -> None:
        self.kinds = kinds
        self._parts: dict[str, list[torch.Tensor]] = {}

    def _add(self, name: str, t: torch.Tensor) -> None:
        self._parts.setdefault(name, []).append(t)

    def __getitem__(self, name: str) -> torch.Tensor:
        parts = self._parts[name]
        if len(parts) > 1:
            self._parts[name] = parts = [torch.cat(parts)]
        return parts[0]

    def __iter__(self) -> Iterator[str]:
        return iter(self._parts)

    def __len__(self) -> int:
        return len(self._parts)

    def of_kind(self, kind: str) -> dict[str, torch.Tensor]:
        return {k: self[k] for k in self if self.kinds.get(k) == kind}


class capture:  # noqa: N801 - used like a function: ``with capture(model) as maps``
    """Context manager recording the outputs of ``model``'s attention modules (all
    of them, or the module paths in ``names``) during the forward passes run inside it."""

    def __init__(self, model: nn.Module, names: Iterable[str] | None = None) -> None:
        self.model = model
        found = _attention_outputs(model)  # one walk over the modules: this runs once per image
        if names is None:
            self._modules = {name: module for name, (_, module, _) in found.items()}
        else:
            self._modules = resolve(model, names)
        self._extract = {name: found[name][2] for name in self._modules if name in found}
        self.maps = Captured({n: found[n][0] if n in found else "other" for n in self._modules})
        self._handles: list[RemovableHandle] = []
        self._thread: int | None = None

    def _hook(self, name: str):
        # The attention matrix is kept without a copy: it is a new tensor that
        # SelfAttention2d only reads (``attn @ v``), never writes, and copying its
        # (B, heads, N, N) floats was a large share of a forward pass (docs/benchmarks.md).
        # Every other output is cloned: blocks may change tensors in place later.
        copy = self.maps.kinds.get(name) != "self_attn"
        extract = self._extract.get(name)

        def hook(module: nn.Module, inputs: tuple, output: torch.Tensor) -> None:
            if threading.get_ident() != self._thread:
                return
            if extract is not None:
                output = extract(module, inputs, output)
            kept = output.detach() if output.requires_grad else output
            if kept.dtype != torch.float32 or kept.device.type != "cpu":
                kept = kept.float().cpu()  # a new tensor already
            elif copy:
                kept = kept.clone()
            self.maps._add(name, kept)  # each tensor op is a dispatch: only the needed ones

        return hook

    def __enter__(self) -> Captured:
        if self._handles:
            raise RuntimeError("this capture is already active")
        self._thread = threading.get_ident()
        try:
            for name, module in self._modules.items():
                self._handles.append(module.register_forward_hook(self._hook(name)))
        except BaseException:
            self.remove_hooks()
            raise
        return self.maps

    def remove_hooks(self) -> None:
        """Remove every hook this capture registered; safe to call twice."""
        while self._handles:
            self._handles.pop().remove()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.remove_hooks()
