"""The page's views, one module each, in the order of the view picker. A view is a
function of the ``Page``; which models it can show follows from the attention kinds it
draws (``kinds.KINDS``' ``view``), so a new kind's view is a module and a row here."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from ..page import Page
from . import axial, cbam, compare, context, export, predictions, se, self_attention


@dataclass(frozen=True)
class View:
    id: str
    title: str
    render: Callable[[Page], None]


VIEWS: tuple[View, ...] = (
    View("predictions", "Predictions", predictions.render),
    View("se", "SE", se.render),
    View("cbam", "CBAM", cbam.render),
    View("self_attn", "Self-attention", self_attention.render),
    View("axial", "Axial", axial.render),
    View("context", "Context", context.render),
    View("compare", "Compare", compare.render),
    View("export", "Export", export.render),
)
BY_TITLE = {v.title: v for v in VIEWS}
