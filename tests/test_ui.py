"""The page's geometry: where a click lands on the original image and where the
cross-hair is drawn, checked against expectations worked out from the displayed
geometry (``tests.browser.original_pixel``), never with the functions under test."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from attnviz.app import ui

from .browser import cross_hair, original_pixel

WIDE, TALL = (451, 300), (37, 410)  # non-square, odd sides: nothing divides evenly


@pytest.mark.parametrize("size", [WIDE, TALL])
@pytest.mark.parametrize("shown", [(448, 298), (120, 80), (900, 599)])  # shrunk and enlarged
def test_a_click_lands_on_the_pixel_under_the_centre_of_the_displayed_pixel(size, shown):
    corners = [(0, 0), (shown[0] - 1, 0), (0, shown[1] - 1), (shown[0] - 1, shown[1] - 1)]
    inside = [(shown[0] // 3, shown[1] // 2), (shown[0] // 2 + 1, 1), (7, shown[1] - 9)]
    for cx, cy in corners + inside:
        xy = ui.to_image_xy({"x": cx, "y": cy, "width": shown[0], "height": shown[1]}, size)
        assert xy == original_pixel(cx, cy, shown, size), (cx, cy)


def _cross_hair_at(shown: Image.Image) -> tuple[float, float]:
    """The cross-hair's centre on a drawn image, from its white pixels."""
    white = (np.asarray(shown) > 215).all(-1)
    return cross_hair(white.sum(0).tolist()), cross_hair(white.sum(1).tolist())


@pytest.mark.parametrize("size", [WIDE, TALL, (1200, 500)])
def test_the_cross_hair_sits_on_the_centre_of_the_query_pixel(size):
    photo = Image.new("RGB", size, (90, 120, 60))  # nothing near white but the cross-hair's core
    w, h = size
    for x, y in [(0, 0), (w - 1, h - 1), (w - 1, 0), (0, h - 1), (w // 3, h // 4)]:
        shown = ui.marked_image(photo, (x, y))
        scale_x, scale_y = shown.width / w, shown.height / h
        sx, sy = _cross_hair_at(shown)
        assert abs(sx - (x + 0.5) * scale_x) <= 1.0 and abs(sy - (y + 0.5) * scale_y) <= 1.0, (x, y, sx, sy)


def test_the_cross_hair_on_a_display_copy_is_placed_in_the_original_image_coordinates():
    copy = Image.new("RGB", (300, 125), (90, 120, 60))  # a display copy of a 1200 x 500 photo
    shown = ui.marked_image(copy, (1199, 0), extent=(1200, 500))
    sx, sy = _cross_hair_at(shown)
    assert abs(sx - 299.875) <= 1.0 and abs(sy - 0.125) <= 1.0


def test_the_first_query_is_the_middle_pixel():
    assert ui.centre((451, 300)) == (225, 150)
    assert ui.centre((1, 1)) == (0, 0)


def test_a_click_on_a_bar_or_an_overview_cell_names_its_block_and_channel():
    assert ui.picked_channel([{"customdata": 17, "x": 3}], "layer2.0.se.gate") == ("layer2.0.se.gate", 17)
    assert ui.picked_channel([{"customdata": [17]}], "layer2.0.se.gate") == ("layer2.0.se.gate", 17)
    assert ui.picked_channel([{"customdata": ["layer3.1.se.gate", 5, 0.7]}]) == ("layer3.1.se.gate", 5)
    assert ui.picked_channel([]) is None  # a click that cleared the selection
    assert ui.picked_channel([{"customdata": 4}]) is None  # a bar, but no block known


def test_each_view_offers_only_the_interventions_its_model_has():
    import attnviz
    from attnviz.intervene import _CHANGES
    from attnviz.models import REGISTRY

    assert set(ui.interventions_for("se", True)) | set(ui.interventions_for("cbam", True)) | set(
        ui.interventions_for("self_attn", True)) == set(attnviz.INTERVENTIONS)
    assert "gates-mean" not in ui.interventions_for("se", False)
    for view, arch in (("se", "se_resnet18"), ("cbam", "cbam_resnet18"), ("self_attn", "sa_resnet18")):
        for what in ui.interventions_for(view, True):
            assert set(_CHANGES[what]) & set(REGISTRY[arch].kinds), (view, what)


def test_the_intervention_summary_says_what_where_and_how_the_class_moved():
    import torch

    from attnviz.intervene import InterventionResult

    r = InterventionResult(model_name="m", what="knockout-top", layers=["layer3.1.se.gate"],
                           classes=["church", "dog", "fish"], before=torch.tensor([0.7, 0.2, 0.1]),
                           after=torch.tensor([0.3, 0.6, 0.1]), target=0, k=4)
    assert ui.intervention_summary(r) == ("the 4 largest channel gates set to 0 in layer3.1: church 70.0% → 30.0% "
                                          "(-40.0 points); top-1 church → dog.")
    r.what, r.k, r.layers = "gates-off", None, [f"layer{s}.{b}.se.gate" for s in range(1, 5) for b in (0, 1)]
    r.after = torch.tensor([0.8, 0.1, 0.1])
    assert ui.intervention_summary(r) == ("channel gates set to 1 (attention off) in 8 blocks (layer1.0 … layer4.1): "
                                          "church 70.0% → 80.0% (+10.0 points); top-1 stays church.")
