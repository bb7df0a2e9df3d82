"""What every view of the page is given: the image, and each model shown with its
analysis of that image. A view asks for models by the attention kinds it draws."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from ..analysis import Analysis
from .service import ModelHandle


@dataclass(frozen=True)
class Shown:
    """One model on the page: its handle (where the model, its profile and its identity
    come from) and its analysis of the page's image."""

    handle: ModelHandle
    analysis: Analysis

    @property
    def key(self) -> str:
        return self.handle.key

    @property
    def label(self) -> str:
        return self.handle.label


@dataclass(frozen=True)
class Page:
    """The page's image (``data``, its ``label`` and a short hash ``img_key``) and the
    models it is shown through, in the sidebar's order."""

    data: bytes
    label: str
    img_key: str
    shown: tuple[Shown, ...]

    def with_kinds(self, kinds: Iterable[str]) -> list[Shown]:
        """The models that produce any of ``kinds``, in the order of ``kinds`` (the Compare
        view's self-attention panel opens on full self-attention where there is one)."""
        kinds = tuple(kinds)
        ordered = [s for k in kinds for s in self.shown if k in s.handle.kinds]
        return list({s.key: s for s in ordered}.values())
