"""Capture the attention tensors a forward pass computes: attnviz's own gates report
them (``attnviz.layers.gate``), any other module is read through a forward hook.

    with attnviz.capture(model) as maps:
        model(x)
    maps["layer1.0.se.gate"]  # (B, C, 1, 1), exactly what multiplied the features

Hooks (and the gates' listener) are registered on entry and always removed on exit,
also when the body raises.
The model is not changed (no ``eval()``, no new attributes). Captured gates are
``detach().float().cpu().clone()`` so that a later in-place op cannot alter them; the
attention matrix, which its layer only reads, is kept as ``detach().float().cpu()``.
Only forward passes run by the thread that opened the ``capture`` are recorded, so
several threads may capture on one shared model at once, each seeing its own tensors.
"""

from __future__ import annotations

import sys
import threading
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import AbstractContextManager
from types import TracebackType

import torch
from torch import nn
from torch.nn.modules.module import _global_forward_hooks, _global_forward_pre_hooks
from torch.utils.hooks import RemovableHandle

from .kinds import ATTENTION_MATRIX_KINDS, LAYER_TYPES, kind_of
from .layers.gate import ReportingGate, listening


def attention_modules(model: nn.Module) -> dict[str, str]:
    """Path of every hookable attention output in ``model`` -> its kind (``kinds.KINDS``:
    ``se`` at ``….se.gate``, ``cbam_channel`` at ``….cbam.channel.gate``, ``self_attn`` at
    ``….attn.softmax``, ...), each with a batch dimension in front of the kind's shape.
    A timm model's modules are found by ``timm_adapter`` (see there for what is hooked).
    """
    return {path: kind for path, (kind, _, _) in _attention_outputs(model).items()}


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
        if isinstance(m, LAYER_TYPES):  # most modules: one check, not one per kind
            kind = kind_of(m)
            if kind is not None:
                found[f"{path}.{kind.output}" if path else kind.output] = (kind.name, getattr(m, kind.output), None)
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


class ThreadBoundHooks:
    """Forward hooks on modules, registered on ``__enter__`` and always removed on exit
    (also when the body raises), that act only on the forward passes run by the thread
    that entered. Subclasses give the hooks (``_hooks``) and check ``_mine()`` in them."""

    def __init__(self) -> None:
        self._handles: list[RemovableHandle] = []
        self._thread: int | None = None
        self._active = False

    def _hooks(self) -> Iterable[tuple[nn.Module, Callable]]:
        raise NotImplementedError

    def _mine(self) -> bool:
        return threading.get_ident() == self._thread

    def __enter__(self):
        if self._active:
            raise RuntimeError(f"this {type(self).__name__} is already active")
        self._thread = threading.get_ident()
        self._active = True
        try:
            for module, hook in self._hooks():
                self._handles.append(module.register_forward_hook(hook))
        except BaseException:
            self.remove_hooks()
            raise

    def remove_hooks(self) -> None:
        """Remove every hook this object registered; safe to call twice."""
        while self._handles:
            self._handles.pop().remove()
        self._active = False

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.remove_hooks()


class capture(ThreadBoundHooks):  # noqa: N801 - used like a function: ``with capture(model) as maps``
    """Context manager recording the outputs of ``model``'s attention modules (all
    of them, or the module paths in ``names``) during the forward passes run inside it.

    attnviz's own gates (``attnviz.layers.gate``) report their outputs to the capture
    open on their thread, so they need no hook; any other module, and a gate that
    already has forward hooks when the capture opens (an intervention's, a user's), is
    hooked as before, so that the capture sees what those hooks made of the output."""

    def __init__(self, model: nn.Module, names: Iterable[str] | None = None) -> None:
        super().__init__()
        self.model = model
        found = _attention_outputs(model)  # one walk over the modules: this runs once per image
        if names is None:
            self._modules = {name: module for name, (_, module, _) in found.items()}
        else:
            self._modules = resolve(model, names)
        self._extract = {name: found[name][2] for name in self._modules if name in found}
        self.maps = Captured({n: found[n][0] if n in found else "other" for n in self._modules})
        self._listened: dict[nn.Module, str] = {}
        self._listening: AbstractContextManager | None = None

    def _keep(self, name: str, output: torch.Tensor) -> None:
        # The attention matrix is kept without a copy: it is a new tensor that
        # SelfAttention2d only reads (``attn @ v``), never writes, and copying its
        # (B, heads, N, N) floats was a large share of a forward pass (docs/benchmarks.md).
        # The same holds for the axial steps' matrices. Every other output is cloned:
        # blocks may change tensors in place later.
        kept = output.detach() if output.requires_grad else output
        if kept.dtype != torch.float32 or kept.device.type != "cpu":
            kept = kept.float().cpu()  # a new tensor already
        elif self.maps.kinds.get(name) not in ATTENTION_MATRIX_KINDS:
            kept = kept.clone()
        self.maps._add(name, kept)  # each tensor op is a dispatch: only the needed ones

    def _hook(self, name: str):
        extract = self._extract.get(name)  # a timm module's: (module, inputs, output) -> the tensor to keep

        def hook(module: nn.Module, inputs: tuple, output: torch.Tensor) -> None:
            if self._mine():
                self._keep(name, output if extract is None else extract(module, inputs, output))

        return hook

    def _listen(self, module: nn.Module, output: torch.Tensor) -> None:
        name = self._listened.get(module)
        if name is not None:
            self._keep(name, output)

    def _hooks(self) -> Iterator[tuple[nn.Module, Callable]]:
        plain_calls = not (_global_forward_hooks or _global_forward_pre_hooks)
        self._listened = {}
        for name, module in self._modules.items():
            if isinstance(module, ReportingGate) and plain_calls and not module._forward_hooks:
                self._listened[module] = name
            else:
                yield module, self._hook(name)

    def __enter__(self) -> Captured:
        super().__enter__()
        if self._listened:
            self._listening = listening(self._listen)
            self._listening.__enter__()
        return self.maps

    def remove_hooks(self) -> None:
        """Remove every hook (and the listener) this capture registered; safe to call twice."""
        super().remove_hooks()
        if self._listening is not None:
            listening_, self._listening = self._listening, None
            listening_.__exit__(None, None, None)
