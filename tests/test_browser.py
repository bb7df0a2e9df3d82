"""The real thing: the app on localhost, driven by Debian's Chromium through Playwright.

Uploads a photo, opens the self-attention view, clicks several pixels, and checks that
the panel changes and shows exactly ``Analysis.query`` for each clicked pixel. Saves a
screenshot and prints how long each click took to update the page (not asserted:
timings are measured by the benchmark, tests stay deterministic)."""

from __future__ import annotations

import os
import shutil
import statistics
from pathlib import Path

import numpy as np
import pytest

import attnviz
from attnviz.app import ui
from attnviz.app.service import sample_images

from .browser import (
    CHROMIUM,
    app_server,
    choose_upload,
    chromium_page,
    click_pixel,
    open_self_attention,
)

pytestmark = pytest.mark.skipif(
    not (Path(CHROMIUM).exists() and shutil.which("chromium")), reason="needs Debian's chromium (CI installs it)")

ARTIFACTS = Path(os.environ.get("ATTNVIZ_TEST_ARTIFACTS", Path(__file__).resolve().parent / "artifacts"))


def _sa_model_name() -> str:
    """The model the app's self-attention view shows first (same rule as the app)."""
    for name in attnviz.available_models():
        if ui.has_kind(attnviz.load_model(name).attnviz_meta.arch, "self_attn"):
            return name
    raise AssertionError("no self-attention model")


def test_clicking_pixels_shows_their_attention_maps(tiny_env):
    photo = sample_images()["cat"]
    reference = attnviz.analyze(photo, attnviz.load_model(_sa_model_name()))
    width, height = reference.image_size

    with app_server({"ATTNVIZ_WEIGHTS_DIR": str(tiny_env)}) as url, chromium_page() as page:
        page.goto(url)
        choose_upload(page).set_input_files(str(photo))
        page.get_by_text(f"{photo.name} ({width}×{height})").wait_for(timeout=120_000)
        img = open_self_attention(page, len(reference.self_attn))
        shown_w, shown_h = img.evaluate("i => [i.width, i.height]")

        maps, times = [], []
        for fx, fy in [(0.15, 0.12), (0.7, 0.75), (0.45, 0.4), (0.06, 0.9), (0.9, 0.2), (0.3, 0.6)]:
            (x, y), shown, seconds = click_pixel(page, img, reference, round(fx * shown_w), round(fy * shown_h))
            times.append(seconds)
            assert len(shown) == len(reference.self_attn) == 2  # both layers updated
            for m, name in zip(shown, reference.self_attn):
                np.testing.assert_allclose(m, reference.query(name, x, y).mean(0).numpy(), rtol=1e-5, atol=1e-7)
                row, col = reference.cell(name, x, y)
                page.get_by_text(f"cell (row {row}, col {col})").first.wait_for(timeout=10_000)
            maps.append(shown[0])

        assert not np.allclose(maps[0], maps[1])  # the panel changed with the click
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(ARTIFACTS / "browser_self_attention.png"), full_page=True)
    print(f"\nclick -> updated panel: median {statistics.median(times) * 1000:.0f} ms, "
          f"all {[round(t * 1000) for t in times]} ms")
