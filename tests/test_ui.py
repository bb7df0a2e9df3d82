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
