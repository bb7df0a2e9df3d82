"""The real thing: the app on localhost, driven by Debian's Chromium through Playwright.

Uploads a photo, opens the self-attention view, clicks two pixels, and checks that the
panel changes and shows exactly ``Analysis.query`` for each clicked pixel. Saves a
screenshot and prints how long each click took to update the page (not asserted:
timings are measured by the benchmark, tests stay deterministic)."""

from __future__ import annotations

import os
import shutil
import statistics
import time
from pathlib import Path

import numpy as np
import pytest

import attnviz
from attnviz import appkit
from attnviz.service import sample_images

from .browser import CHROMIUM, app_server, chromium_page
from .conftest import plotly_array

pytestmark = pytest.mark.skipif(
    not (Path(CHROMIUM).exists() and shutil.which("chromium")), reason="needs Debian's chromium (CI installs it)")

ARTIFACTS = Path(os.environ.get("ATTNVIZ_TEST_ARTIFACTS", Path(__file__).resolve().parent / "artifacts"))
COMPONENT = 'iframe[title="streamlit_image_coordinates.streamlit_image_coordinates"]'

# Heatmap z of the first chart that has one (the mean over heads of the first layer),
# as the figure carries it: a nested list, or plotly's {dtype, bdata, shape} encoding.
READ_MEAN_MAP = """() => {
  for (const gd of document.querySelectorAll('.js-plotly-plot')) {
    const t = (gd.data || []).find(t => t.type === 'heatmap');
    if (t) return (t.z && t.z.bdata) ? {dtype: t.z.dtype, bdata: t.z.bdata, shape: String(t.z.shape)}
                                     : Array.from(t.z, row => Array.from(row));
  }
  return null;
}"""


def _sa_model_name() -> str:
    """The model the app's self-attention view shows first (same rule as the app)."""
    for name in attnviz.available_models():
        meta = attnviz.load_model(name).attnviz_meta
        if appkit.has_kind(meta.arch, "self_attn"):
            return name
    raise AssertionError("no self-attention model")


def _wait_for_query_text(page, expected: str, timeout: float = 30.0) -> None:
    page.get_by_text(expected, exact=False).first.wait_for(timeout=timeout * 1000)


def test_clicking_two_pixels_shows_their_attention_maps(tiny_env):
    photo = sample_images()["cat"]
    name = _sa_model_name()
    model = attnviz.load_model(name)
    reference = attnviz.analyze(photo, model)
    layer = next(iter(reference.self_attn))
    width, height = reference.image_size

    with app_server({"ATTNVIZ_WEIGHTS_DIR": str(tiny_env)}) as url, chromium_page() as page:
        page.goto(url)
        page.get_by_text("Upload", exact=True).click()
        page.locator('input[type="file"]').set_input_files(str(photo))
        page.get_by_text(f"{photo.name} ({width}×{height})").wait_for(timeout=120_000)
        page.get_by_text("Self-attention", exact=True).click()
        img = page.frame_locator(COMPONENT).locator("img")
        img.wait_for(timeout=60_000)
        shown_w, shown_h = img.evaluate("i => [i.width, i.height]")
        _wait_for_query_text(page, "query pixel (")

        seen_maps = []
        times = []
        fractions = [(0.15, 0.12), (0.7, 0.75), (0.45, 0.4), (0.06, 0.9), (0.9, 0.2), (0.3, 0.6)]
        for fx, fy in fractions:
            cx, cy = round(fx * shown_w), round(fy * shown_h)
            x, y = appkit.to_image_xy({"x": cx, "y": cy, "width": shown_w, "height": shown_h}, (width, height))
            expected_text = f"query pixel ({x:.0f}, {y:.0f}) of {width}×{height}"
            t0 = time.perf_counter()
            img.click(position={"x": cx, "y": cy})
            _wait_for_query_text(page, expected_text)
            expected = reference.query(layer, x, y).mean(0).numpy()
            # The text and the charts of one rerun arrive one after the other: give the
            # charts a moment to catch up before asserting what they show.
            deadline = time.monotonic() + 15
            while True:
                raw = page.evaluate(READ_MEAN_MAP)
                shown = plotly_array(raw) if raw is not None else None
                if shown is not None and shown.shape == expected.shape and np.allclose(shown, expected, atol=1e-7):
                    break
                if time.monotonic() > deadline:
                    break
                page.wait_for_timeout(20)
            times.append(time.perf_counter() - t0)
            assert shown is not None
            np.testing.assert_allclose(shown, expected, rtol=1e-5, atol=1e-7)
            row, col = reference.cell(layer, x, y)
            page.get_by_text(f"cell (row {row}, col {col})").first.wait_for(timeout=10_000)
            seen_maps.append(shown)

        assert not np.allclose(seen_maps[0], seen_maps[1])  # the panel changed with the click
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(ARTIFACTS / "browser_self_attention.png"), full_page=True)
    print(f"\nclick -> updated panel: median {statistics.median(times) * 1000:.0f} ms, "
          f"all {[round(t * 1000) for t in times]} ms")
