"""Rows 4-6: the app in Debian's Chromium, driven as ``tests/test_browser.py`` drives it.

One session measures, in this order: cold start (process start -> healthy -> first
complete render of the default sample), memory after that render, uploads of distinct
images (set_input_files -> all top-5 bars show that image's predictions), memory
after them, and clicks on the self-attention view (click -> the panel shows exactly
``Analysis.query`` of the clicked pixel)."""

from __future__ import annotations

import os
import random
import statistics
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import urlparse

import numpy as np

import attnviz
from attnviz.app import ui
from attnviz.app.service import image_key
from tests.browser import (
    CHROMIUM,
    app_server,
    choose_upload,
    chromium_page,
    click_pixel,
    open_self_attention,
    original_pixel,
    wait_until,
)

from .images import default_sample
from .report import Row, skipped
from .weights import self_attention_model

if TYPE_CHECKING:
    from playwright.sync_api import Page

PAGE_TIMEOUT_S = 180.0
CLICK_TIMEOUT_S = 30.0
GB = 1e9

# The probabilities of every top-5 on the page (attnviz.figures.top_k_html), in page
# order, best first, as its data-top5 attribute carries them.
READ_BARS = """() => Array.from(document.querySelectorAll('[data-top5]'))
  .map(d => JSON.parse(d.dataset.top5).map(pair => pair[1]))"""


@dataclass
class PageRun:
    """Raw figures of one browser session; times in seconds, memory in bytes."""

    health_s: float = 0.0
    first_render_s: float = 0.0
    rss_first: int = 0
    upload_s: list[float] = field(default_factory=list)
    rss_after: int = 0
    peak_rss: int = 0
    click_s: list[float] = field(default_factory=list)
    click_model: str | None = None
    models: int = 0  # models the app shows
    hover_ms: list[float] = field(default_factory=list)  # mousemove -> map drawn, per position
    hover_draw_ms: list[float] = field(default_factory=list)  # of which drawing, per position
    hover_messages: int = 0  # websocket frames the page sent while hovering
    hover_ready_s: float = 0.0  # a new image chosen -> the explorer ready to hover
    layer_bytes: dict[str, int] = field(default_factory=dict)


def chromium_missing() -> str | None:
    """Why the browser rows cannot run here, or ``None`` when they can."""
    if not Path(CHROMIUM).exists():
        return f"{CHROMIUM} is missing (install Debian's chromium)"
    try:
        import playwright  # noqa: F401
    except ImportError:
        return "playwright is not installed (requirements-dev.txt)"
    return None


# --- the server process and its memory ------------------------------------------------

def _children(pid: int) -> list[int]:
    kids = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            ppid = int(stat.read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue  # the process ended while we looked
        if ppid == pid:
            kids.append(int(stat.parent.name))
    return kids


def process_tree(pid: int) -> list[int]:
    """``pid`` and all its descendants."""
    tree, todo = [], [pid]
    while todo:
        p = todo.pop()
        tree.append(p)
        todo.extend(_children(p))
    return tree


def server_pid(url: str) -> int:
    """The ``streamlit run`` process this process started for ``url``."""
    port = str(urlparse(url).port).encode()
    for pid in _children(os.getpid()):
        try:
            argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if b"streamlit" in argv and port in argv:
            return pid
    raise RuntimeError(f"no streamlit child process serves {url}")


def _status_kb(pid: int, key: str) -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(f"{key}:"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


def rss(pid: int) -> int:
    """Resident memory (VmRSS) of ``pid`` and its descendants, in bytes."""
    return sum(_status_kb(p, "VmRSS") for p in process_tree(pid)) * 1024


def peak_rss(pid: int) -> int:
    """Peak resident memory (VmHWM) of ``pid`` itself, in bytes."""
    return _status_kb(pid, "VmHWM") * 1024


# --- what the page should show --------------------------------------------------------

def expected_bars(image: Path, names: list[str]) -> list[np.ndarray]:
    """The probabilities of the app's top-5 bars for ``image``, one list per model in page
    order, best first, from the same package functions the app calls."""
    return [np.asarray([p for _, p in attnviz.analyze(image, attnviz.load_model(n)).top_k(5)]) for n in names]


def bars_match(read: list, expected: list[np.ndarray]) -> bool:
    """Whether ``READ_BARS``' result is exactly these top-5 bars (all of them, new values)."""
    shown = [np.asarray(v) for v in read]
    return len(shown) == len(expected) and all(
        s.shape == e.shape and np.allclose(s, e, atol=1e-6) for s, e in zip(shown, expected))


def shows_bars(page: Page, expected: list[np.ndarray]) -> bool:
    """Whether the page shows exactly these top-5 bars (all of them, new values)."""
    return bars_match(page.evaluate(READ_BARS), expected)


def p95(values: list[float]) -> float:
    """The 95th percentile of ``values`` (the nearest rank)."""
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(0.95 * (len(ordered) - 1)))]


# --- the session ----------------------------------------------------------------------

def upload_and_time(page: Page, images: list[Path], names: list[str], run: PageRun) -> None:
    """Switch to Upload, then upload each image and time it to its complete render."""
    file_input = choose_upload(page)
    for image in images:
        expected = expected_bars(image, names)
        file_input.wait_for(state="attached", timeout=PAGE_TIMEOUT_S * 1000)
        t0 = time.perf_counter()
        file_input.set_input_files(str(image))
        wait_until(page, lambda: shows_bars(page, expected), f"the top-5 bars of {image.name}", PAGE_TIMEOUT_S)
        run.upload_s.append(time.perf_counter() - t0)


def click_and_time(page: Page, image: Path, model_name: str, clicks: int, run: PageRun, seed: int = 0) -> None:
    """Open the self-attention view and time ``clicks`` clicks on the image, each to the
    moment the whole panel shows the clicked pixel: every layer's text and exactly its
    mean attention map. Clicks that stay in the finest layer's current cell are redrawn."""
    reference = attnviz.analyze(image, attnviz.load_model(model_name))
    layer = next(iter(reference.self_attn))
    img = open_self_attention(page, len(reference.self_attn), PAGE_TIMEOUT_S)
    shown_w, shown_h = img.evaluate("i => [i.width, i.height]")

    rng = random.Random(seed)
    last_cell = reference.cell(layer, *ui.centre(reference.image_size))
    while len(run.click_s) < clicks:
        cx, cy = rng.randint(2, shown_w - 3), rng.randint(2, shown_h - 3)
        x, y = original_pixel(cx, cy, (shown_w, shown_h), reference.image_size)
        if reference.cell(layer, x, y) == last_cell:
            continue  # same map as now: nothing to wait for
        last_cell = reference.cell(layer, x, y)
        run.click_s.append(click_pixel(page, img, reference, cx, cy, CLICK_TIMEOUT_S)[2])


# The live explorer: while Streamlit replaces the page's elements an old explorer (of the
# previous image) can still be in the page beside the new one, and replacing an upload
# shows the sample for one rerun (the uploader is empty between the old file and the new),
# so every query names the explorer by its payload's id (the image's key, then the model's)
# instead of taking the first one in the page.
EXPLORER = """id => [...document.querySelectorAll('.avx-root')].find(r => r.dataset.ready === '1' && r.__attnviz
  && r.__attnviz.id === id)"""
EXPLORER_OF_IMAGE = """key => [...document.querySelectorAll('.avx-root')].find(r => r.dataset.ready === '1'
  && r.__attnviz && r.__attnviz.id.startsWith(key + '-'))"""


def on_explorer(page: Page, ident: str, body: str, arg=None):
    """Evaluate ``body`` (a JS expression of ``root``, the live explorer's root, and ``arg``)."""
    return page.evaluate(f"([id, arg]) => {{ const root = ({EXPLORER})(id); return {body}; }}", [ident, arg])


def hover_and_time(page: Page, image: Path, positions: int, run: PageRun, sent: list, seed: int = 0) -> None:
    """Query by hovering: upload ``image`` (new to the app) with the hover explorer
    open, time it to the explorer's first drawn frame, then hover ``positions`` pixels
    and keep the explorer's own mousemove -> map-drawn times and the number of
    websocket frames the page sent meanwhile."""
    page.get_by_role("radiogroup", name="Query by").get_by_text("Hover", exact=True).click()
    page.wait_for_selector(".avx-root[data-ready='1']", timeout=PAGE_TIMEOUT_S * 1000)
    key = image_key(image.read_bytes())[:16]  # as app.py names the page's image
    t0 = time.perf_counter()
    choose_upload(page).set_input_files(str(image))
    page.wait_for_function(EXPLORER_OF_IMAGE, arg=key, polling="raf", timeout=PAGE_TIMEOUT_S * 1000)
    run.hover_ready_s = time.perf_counter() - t0
    live = page.evaluate(f"key => ({EXPLORER_OF_IMAGE})(key).__attnviz.id", key)
    run.layer_bytes = on_explorer(page, live, "Object.fromEntries(root.__attnviz.payload.layers.map("
                                              "L => [L.name, L.bytes]))")
    on_explorer(page, live, "root.querySelector('canvas.avx-photo').scrollIntoView({block: 'center'})")
    box = on_explorer(page, live, "(b => ({x: b.x, y: b.y, width: b.width, height: b.height}))("
                                  "root.querySelector('canvas.avx-photo').getBoundingClientRect())")
    rng = random.Random(seed)
    drawn = on_explorer(page, live, "root.__attnviz.latencies.length")
    before = len(sent)
    for _ in range(positions):
        query = on_explorer(page, live, "root.dataset.query")
        for _attempt in range(20):
            x, y = box["x"] + rng.uniform(1, box["width"] - 1), box["y"] + rng.uniform(1, box["height"] - 1)
            page.mouse.move(x, y)
            try:
                page.wait_for_function(f"([id, q]) => ({EXPLORER})(id).dataset.query !== q", arg=[live, query],
                                       polling="raf", timeout=2000)
                break
            except Exception:  # the same pixel as before: nothing new to draw, pick another
                continue
        else:
            raise TimeoutError("20 pointer moves over the explorer's photo drew nothing new")
    page.wait_for_timeout(500)
    run.hover_messages = len(sent) - before
    run.hover_ms = on_explorer(page, live, "root.__attnviz.latencies.slice(arg)", drawn)
    run.hover_draw_ms = on_explorer(page, live, "root.__attnviz.drawMs.slice(arg)", drawn)


def browser_session(images: list[Path], clicks: int, hover_image: Path | None = None,
                    positions: int = 100) -> PageRun:
    """Start the app and Chromium, and measure everything rows 4-6 report."""
    names = attnviz.available_models()  # what the app will show, in its order
    run = PageRun(click_model=self_attention_model(names), models=len(names))
    first_expected = expected_bars(default_sample(), names)
    with chromium_page() as page:
        sent: list = []  # websocket frames the page sends to the server
        page.on("websocket", lambda ws: ws.on("framesent", lambda payload: sent.append(payload)))
        t0 = time.perf_counter()
        with app_server() as url:
            run.health_s = time.perf_counter() - t0
            pid = server_pid(url)
            page.goto(url)
            wait_until(page, lambda: shows_bars(page, first_expected), "the default sample's top-5 bars",
                       PAGE_TIMEOUT_S)
            run.first_render_s = time.perf_counter() - t0
            run.rss_first = rss(pid)
            upload_and_time(page, images, names, run)
            run.rss_after = rss(pid)
            run.peak_rss = peak_rss(pid)
            if run.click_model is not None:
                click_and_time(page, images[-1], run.click_model, clicks, run)
                if hover_image is not None:
                    hover_and_time(page, hover_image, positions, run, sent)
    return run


def page_rows(run: PageRun) -> list[Row]:
    """Rows 4, 5 and 6 from one session's raw figures."""
    n, n_models = len(run.upload_s), run.models
    rows = []
    if run.click_s:
        rows.append(Row(4, "click → updated self-attention panel", statistics.median(run.click_s) * 1000, "ms", 300,
                        f"median of {len(run.click_s)} clicks on {run.click_model}, to every layer's text and exact "
                        f"mean map of the new pixel (whole panel); all {[round(t * 1000) for t in run.click_s]} ms",
                        [t * 1000 for t in run.click_s]))
    else:
        rows.append(skipped(4, "click → updated self-attention panel", "ms", "no self-attention model", 300))
    if run.hover_ms:
        ms = sorted(run.hover_ms)
        rows.append(Row(4, "hover → map drawn, p95", p95(ms), "ms", 16,
                        f"{len(ms)} pointer moves over the photo in the hover explorer ({run.click_model}): from the "
                        f"mousemove event's timestamp to the end of the animation frame that drew every layer's "
                        f"mean and head maps; median {statistics.median(ms):.2f} ms, max {ms[-1]:.2f} ms. Most of it "
                        f"is the wait for the next animation frame (up to 16.7 ms at 60 Hz); the drawing itself: "
                        f"median {statistics.median(run.hover_draw_ms):.2f} ms, max {max(run.hover_draw_ms):.2f} ms",
                        ms))
        rows.append(Row(4, "messages to the server while hovering", run.hover_messages, "count", 0,
                        f"websocket frames the page sent during those {len(ms)} moves", [run.hover_messages]))
        rows.append(Row(4, "new image → explorer ready to hover", run.hover_ready_s * 1000, "ms", None,
                        "set_input_files of an image new to the app → the explorer has drawn its first frame (one "
                        "forward pass per model, the payload built and sent once); bytes sent per layer: "
                        + ", ".join(f"{k.split('.attn')[0]} {v / 1e6:.2f} MB" for k, v in run.layer_bytes.items()),
                        [run.hover_ready_s * 1000]))
    rows.append(Row(4, "upload → complete render", statistics.median(run.upload_s) * 1000, "ms", None,
                    f"median of {n} uploads of new PNGs (set_input_files → all {n_models} top-5 bars show the "
                    f"image's predictions; {n_models} forward passes each)", [t * 1000 for t in run.upload_s]))
    rows.append(Row(5, "app memory, models loaded", run.rss_first / GB, "GB", None,
                    "VmRSS of the streamlit process (+ children) after the first render; GB = 10⁹ bytes",
                    [run.rss_first / GB]))
    rows.append(Row(5, f"app memory after {n} images", run.rss_after / GB, "GB", 1.5,
                    f"VmRSS after {n} distinct uploads; peak VmHWM {run.peak_rss / GB:.2f} GB; result cache bounded "
                    "by attnviz.limits RESULT_CACHE_ENTRIES/RESULT_CACHE_MB", [run.rss_after / GB]))
    rows.append(Row(6, "cold start → healthy", run.health_s, "s", None,
                    "Popen(streamlit run serve.py) → /_stcore/health says ok (polled every 0.3 s; includes the "
                    "warm-up)", [run.health_s]))
    rows.append(Row(6, "cold start → first analysis", run.first_render_s, "s", None,
                    f"Popen → page loaded in an open Chromium with all {n_models} top-5 bars of the default sample",
                    [run.first_render_s]))
    warm = run.first_render_s - run.health_s
    rows.append(Row(6, "healthy → first page with every model's predictions", warm, "s", 3,
                    "from the first ok of /_stcore/health to all top-5 bars shown (serve.py loads the models and "
                    "analyses the default sample before health says ok)", [warm]))
    return rows


def skipped_page_rows(reason: str) -> list[Row]:
    """Rows 4-6 when the browser session cannot run, each saying why."""
    return [skipped(4, "click → updated self-attention panel", "ms", reason, 300),
            skipped(4, "hover → map drawn, p95", "ms", reason, 16),
            skipped(4, "messages to the server while hovering", "count", reason, 0),
            skipped(4, "new image → explorer ready to hover", "ms", reason),
            skipped(4, "upload → complete render", "ms", reason),
            skipped(5, "app memory, models loaded", "GB", reason),
            skipped(5, "app memory after the images", "GB", reason, 1.5),
            skipped(6, "cold start → healthy", "s", reason),
            skipped(6, "cold start → first analysis", "s", reason),
            skipped(6, "healthy → first page with every model's predictions", "s", reason, 3)]
