"""Run the app on localhost and drive it with Debian's Chromium through Playwright."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import urllib.request
from contextlib import contextmanager
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_healthy(url: str, proc: subprocess.Popen, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"the server exited with status {proc.returncode}")
        try:
            with urllib.request.urlopen(f"{url}/_stcore/health", timeout=2) as r:
                if r.read().strip() == b"ok":
                    return
        except OSError:
            time.sleep(0.3)
    raise TimeoutError(f"{url} did not become healthy in {timeout:.0f} s")


@contextmanager
def app_server(env: dict[str, str] | None = None, extra_args: list[str] | None = None):
    """``streamlit run app.py`` on a free localhost port; yields the base URL."""
    port = free_port()
    cmd = [sys.executable, "-m", "streamlit", "run", str(ROOT / "app.py"), "--server.headless", "true",
           "--server.address", "127.0.0.1", "--server.port", str(port), "--server.fileWatcherType", "none",
           "--browser.gatherUsageStats", "false", *(extra_args or [])]
    proc = subprocess.Popen(cmd, cwd=ROOT, env={**os.environ, **(env or {})}, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    try:
        url = f"http://127.0.0.1:{port}"
        wait_healthy(url, proc)
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@contextmanager
def chromium_page(width: int = 1500, height: int = 1100):
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": width, "height": height})
            yield page
        finally:
            browser.close()


# --- driving the page (shared by tests/test_browser.py and benchmarks/page.py) ---------

COMPONENT = 'iframe[title="streamlit_image_coordinates.streamlit_image_coordinates"]'
IMAGE_UPLOADER = "JPEG, PNG"  # the start of the image uploader's label (other uploaders take weights)

# The self-attention view draws each layer in a live figure (attnviz.live_figure), an
# iframe that keeps its Plotly chart across reruns.
LIVE_FIGURE = 'iframe[title="attnviz.live_figure.live_figure"]'

# In one frame, the z of the first heatmap of every chart (in the self-attention view:
# the layer's mean over heads), as the figure carries it: a nested list, or plotly's
# {dtype, bdata, shape} encoding.
READ_MEAN_MAPS = """() => {
  const out = [];
  for (const gd of document.querySelectorAll('.js-plotly-plot')) {
    const t = (gd.data || []).find(t => t.type === 'heatmap');
    if (t) out.push((t.z && t.z.bdata) ? {dtype: t.z.dtype, bdata: t.z.bdata, shape: String(t.z.shape)}
                                       : Array.from(t.z, row => Array.from(row)));
  }
  return out;
}"""


def wait_until(page, check, what: str, timeout: float) -> None:
    """Poll ``check()`` every 20 ms until it is true; TimeoutError naming ``what``."""
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise TimeoutError(f"the page did not show {what} within {timeout:.0f} s")
        page.wait_for_timeout(20)


def choose_upload(page):
    """Switch the image source to Upload; returns the image uploader's file input."""
    page.get_by_role("radiogroup", name="Source").get_by_text("Upload", exact=True).click()
    return page.locator('[data-testid="stFileUploader"]').filter(has_text=IMAGE_UPLOADER).locator(
        'input[type="file"]')


def open_view(page, view: str) -> None:
    page.get_by_role("radiogroup", name="View").get_by_text(view, exact=True).click()


def shown_mean_maps(page) -> list:
    """The mean attention map of every self-attention chart on the page, in page order."""
    from .conftest import plotly_array

    maps = []
    for frame in page.locator(LIVE_FIGURE).element_handles():  # in page order
        content = frame.content_frame()
        if content is not None:
            maps += [plotly_array(raw) for raw in content.evaluate(READ_MEAN_MAPS)]
    return maps


def click_pixel(page, img, reference, cx: int, cy: int, timeout: float = 30.0):
    """Click displayed pixel (cx, cy) of the self-attention view's image and wait until
    the whole panel has updated: every layer's line names the original pixel and every
    layer's chart shows exactly that pixel's mean map from ``reference`` (an
    ``Analysis`` of the same image and model). Returns the original pixel (x, y) and
    the maps shown, one per layer."""
    import numpy as np

    from attnviz import appkit

    shown_w, shown_h = img.evaluate("i => [i.width, i.height]")
    width, height = reference.image_size
    x, y = appkit.to_image_xy({"x": cx, "y": cy, "width": shown_w, "height": shown_h}, (width, height))
    expected = [reference.query(layer, x, y).mean(0).numpy() for layer in reference.self_attn]
    img.click(position={"x": cx, "y": cy})
    lines = page.get_by_text(f"query pixel ({x:.0f}, {y:.0f}) of {width}×{height}")

    def shows_it() -> bool:
        # The lines and the charts of one rerun arrive one after the other.
        if lines.count() != len(expected):
            return False
        maps = shown_mean_maps(page)
        return len(maps) == len(expected) and all(
            m.shape == e.shape and bool(np.allclose(m, e, atol=1e-7)) for m, e in zip(maps, expected))

    wait_until(page, shows_it, f"the attention maps of pixel ({x:.0f}, {y:.0f})", timeout)
    return (x, y), shown_mean_maps(page)
