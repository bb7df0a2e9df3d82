"""docs/img/view_*.png: one screenshot of each main view of the app, as a user first
sees it (the default sample, a 1400 px wide window), for the README.

    .venv/bin/python docs/make_screenshots.py

Runs ``streamlit run serve.py`` on localhost and Debian's Chromium through Playwright,
with the helpers the browser tests use.
"""

from __future__ import annotations

import io
import sys
from pathlib import Path

from PIL import Image
from playwright.sync_api import Error as PlaywrightError

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.browser import app_server, chromium_page, open_view, wait_until  # noqa: E402

VIEWS = {"Predictions": "view_predictions", "SE": "view_se", "CBAM": "view_cbam",
         "Self-attention": "view_self_attention", "Axial": "view_axial", "Compare": "view_compare"}
SAVED_WIDTH = 1000  # px: enough to read, small enough for the repository


def charts_settled(page, last: list[int]) -> bool:
    """True once the number of drawn charts (also inside live-figure frames, and the
    predictions' top-5 bars) stops changing."""
    n = page.locator(".js-plotly-plot, [data-top5]").count()
    for frame in page.frames[1:]:
        try:
            n += frame.locator(".js-plotly-plot").count()
        except PlaywrightError:  # the frame of a view just left
            pass
    settled = n > 0 and last and last[-1] == n
    last.append(n)
    page.wait_for_timeout(700)
    return bool(settled)


def hover_and_pin(page) -> None:
    """The hover explorer as a user leaves it: one pixel pinned, the pointer on another."""
    page.wait_for_function("() => document.querySelector('.avx-root')?.dataset.ready === '1'", timeout=180_000)
    page.locator(".avx-root").evaluate("e => e.scrollIntoView({block: 'start'})")  # the explorer, not the controls
    page.wait_for_timeout(300)
    box = page.locator("canvas.avx-photo").bounding_box()
    page.mouse.click(box["x"] + 0.47 * box["width"], box["y"] + 0.30 * box["height"])  # the temple's roof: pinned
    page.mouse.move(box["x"] + 0.80 * box["width"], box["y"] + 0.72 * box["height"])  # the trees
    page.wait_for_timeout(500)


def main() -> None:
    out = ROOT / "docs" / "img"
    out.mkdir(parents=True, exist_ok=True)
    with app_server() as url, chromium_page(width=1400, height=1000) as page:
        page.goto(url)
        for view, stem in VIEWS.items():
            open_view(page, view)
            if view == "Self-attention":
                hover_and_pin(page)
            else:
                counts: list[int] = []
                wait_until(page, lambda: charts_settled(page, counts), f"the {view} view's charts", 180)
            if view == "Axial":  # the maps, not the photo to click: layer2.1's at the top
                page.locator("p", has_text="query pixel (").nth(1).evaluate("e => e.scrollIntoView({block: 'start'})")
                page.mouse.move(700, 5)  # off the charts: no toolbar
            page.wait_for_timeout(1500)  # images inside the charts
            shot = Image.open(io.BytesIO(page.screenshot(full_page=False))).convert("RGB")
            shot = shot.resize((SAVED_WIDTH, round(shot.height * SAVED_WIDTH / shot.width)), Image.LANCZOS)
            shot.save(out / f"{stem}.png", optimize=True)
            print(out / f"{stem}.png", shot.size)


if __name__ == "__main__":
    main()
