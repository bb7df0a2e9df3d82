"""Row 8: several people at once. N browser sessions (one Chromium, a context each)
against one server, all at the same time: each uploads its own image, waits for every
model's top-5 bars of THAT image (so a session shown another's results never
finishes: no cross-talk), then opens the self-attention view and clicks pixels, each
to the moment its panel shows exactly ``Analysis.query`` of the pixel clicked."""

from __future__ import annotations

import asyncio
import random
import statistics
import time
from dataclasses import dataclass, field
from pathlib import Path

import attnviz
from tests.browser import COMPONENT, IMAGE_UPLOADER, LIVE_FIGURE, PANEL_SHOWS, app_server, original_pixel

from .page import GB, PAGE_TIMEOUT_S, READ_BARS, bars_match, expected_bars, p95, peak_rss, server_pid
from .report import Row, skipped

FIGURES = ("upload → render, p95, concurrent", "click → panel, p95, concurrent", "errors, concurrent sessions",
           "peak memory, concurrent sessions")


@dataclass
class LoadRun:
    sessions: int = 0
    upload_s: list[float] = field(default_factory=list)
    click_s: list[float] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    peak_rss: int = 0


async def _session(browser, url: str, image: Path, names: list[str], sa_model: str, clicks: int, seed: int,
                   run: LoadRun) -> None:
    expected = expected_bars(image, names)
    reference = attnviz.analyze(image, attnviz.load_model(sa_model))
    ctx = await browser.new_context(viewport={"width": 1500, "height": 1100})
    page = await ctx.new_page()
    page.on("pageerror", lambda e: run.errors.append(f"{image.name}: script error: {e}"))
    try:
        await page.goto(url)
        await page.get_by_role("radiogroup", name="Source").get_by_text("Upload", exact=True).click()
        upload = page.locator('[data-testid="stFileUploader"]').filter(has_text=IMAGE_UPLOADER).locator(
            'input[type="file"]')
        t0 = time.perf_counter()
        await upload.set_input_files(str(image))
        while not bars_match(await page.evaluate(READ_BARS), expected):
            if time.perf_counter() - t0 > PAGE_TIMEOUT_S:
                raise TimeoutError(f"{image.name}: its own predictions never showed")
            await asyncio.sleep(0.02)
        run.upload_s.append(time.perf_counter() - t0)

        await page.get_by_role("radiogroup", name="View").get_by_text("Self-attention", exact=True).click()
        await page.get_by_role("radiogroup", name="Query by").get_by_text("Click", exact=True).click()
        img = page.frame_locator(COMPONENT).locator("img")
        await img.wait_for(timeout=PAGE_TIMEOUT_S * 1000)
        await page.get_by_text("query pixel (").first.wait_for(timeout=PAGE_TIMEOUT_S * 1000)
        shown_w, shown_h = await img.evaluate("i => [i.width, i.height]")
        rng = random.Random(seed)
        for _ in range(clicks):
            box = await img.bounding_box()
            cx, cy = rng.randint(2, shown_w - 3), rng.randint(2, shown_h - 3)
            x, y = original_pixel(cx, cy, (shown_w, shown_h), reference.image_size)
            maps = [reference.query(layer, x, y).mean(0).numpy().ravel().tolist() for layer in reference.self_attn]
            text = f"query pixel ({x}, {y}) of {reference.image_size[0]}×{reference.image_size[1]}"
            t0 = time.time()
            await page.mouse.click(box["x"] + cx, box["y"] + cy)
            handle = await page.wait_for_function(PANEL_SHOWS, arg=[LIVE_FIGURE, text, maps], polling="raf",
                                                  timeout=PAGE_TIMEOUT_S * 1000)
            run.click_s.append(await handle.json_value() / 1000 - t0)
        if await page.locator('[data-testid="stException"]').count():
            run.errors.append(f"{image.name}: the page shows an exception")
    except Exception as exc:  # counted, and the other sessions go on
        run.errors.append(f"{image.name}: {type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}")
    finally:
        await ctx.close()


async def _all(url: str, images: list[Path], names: list[str], sa_model: str, clicks: int, run: LoadRun) -> None:
    from playwright.async_api import async_playwright

    from tests.browser import CHROMIUM, CHROMIUM_ARGS

    async with async_playwright() as p:
        browser = await p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            await asyncio.gather(*(_session(browser, url, image, names, sa_model, clicks, i, run)
                                   for i, image in enumerate(images)))
        finally:
            await browser.close()


def load_session(images: list[Path], clicks: int, sa_model: str) -> LoadRun:
    """One server, ``len(images)`` concurrent browser sessions, each with its own image."""
    run = LoadRun(sessions=len(images))
    names = attnviz.available_models()
    with app_server() as url:
        pid = server_pid(url)
        asyncio.run(_all(url, images, names, sa_model, clicks, run))
        run.peak_rss = peak_rss(pid)
    return run


def load_rows(run: LoadRun) -> list[Row]:
    n = run.sessions
    rows = []
    if run.upload_s:
        rows.append(Row(8, FIGURES[0], p95(run.upload_s) * 1000, "ms", None,
                        f"{len(run.upload_s)} of {n} sessions at once, each its own new image, to every model's top-5 "
                        f"bars of that image; median {statistics.median(run.upload_s) * 1000:.0f} ms",
                        [t * 1000 for t in run.upload_s]))
    else:
        rows.append(skipped(8, FIGURES[0], "ms", "no session finished an upload"))
    if run.click_s:
        rows.append(Row(8, FIGURES[1], p95(run.click_s) * 1000, "ms", None,
                        f"{len(run.click_s)} clicks by the {n} sessions at once, each to its panel showing exactly "
                        f"its pixel's maps; median {statistics.median(run.click_s) * 1000:.0f} ms",
                        [t * 1000 for t in run.click_s]))
    else:
        rows.append(skipped(8, FIGURES[1], "ms", "no click finished"))
    rows.append(Row(8, FIGURES[2], len(run.errors), "count", 0,
                    ("; ".join(run.errors[:3]) or f"none in {n} sessions: each saw its own image's predictions and "
                     "maps"), [len(run.errors)]))
    rows.append(Row(8, FIGURES[3], run.peak_rss / GB, "GB", 1.5,
                    "VmHWM of the server process: the result cache is bounded by attnviz.limits", [run.peak_rss / GB]))
    return rows


def skipped_load_rows(reason: str) -> list[Row]:
    units = ("ms", "ms", "count", "GB")
    targets = (None, None, 0, 1.5)
    return [skipped(8, f, u, reason, t) for f, u, t in zip(FIGURES, units, targets)]
