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
    """``streamlit run serve.py`` (the page, warmed up) on a free localhost port; yields
    the base URL once the server says it is healthy."""
    port = free_port()
    cmd = [sys.executable, "-m", "streamlit", "run", str(ROOT / "serve.py"), "--server.headless", "true",
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
def chromium_page(width: int = 1500, height: int = 1100, touch: bool = False):
    """A headless Chromium page; ``touch``: the page has a touch screen (``page.touchscreen``)."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": width, "height": height}, has_touch=touch)
            yield page
        finally:
            browser.close()


# --- driving the page (shared by tests/test_browser.py and benchmarks/page.py) ---------

COMPONENT = 'iframe[title="attnviz.app.click_image.click_image"]'
IMAGE_UPLOADER = "JPEG, PNG"  # the start of the image uploader's label (other uploaders take weights)

# The self-attention view draws each layer in a live figure (attnviz.app.live_figure), an
# iframe that keeps its Plotly chart across reruns.
LIVE_FIGURE = 'iframe[title="attnviz.app.live_figure.live_figure"]'

# In one frame, the z of the first heatmap of every chart (in the self-attention view:
# the layer's mean over heads), as the figure carries it: a nested list, or plotly's
# {dtype, bdata, shape} encoding.
# The mean map of a query panel is its heatmap with the colour bar; where it is drawn on a
# log or square-root scale, or only some cells coloured, the weights themselves are its
# customdata (figures.query_panel).
READ_MEAN_MAPS = """() => {
  const out = [];
  for (const gd of document.querySelectorAll('.js-plotly-plot')) {
    const t = (gd.data || []).find(t => t.type === 'heatmap' && t.showscale !== false);
    const z = t && (t.customdata || t.z);
    if (z) out.push(z.bdata ? {dtype: z.dtype, bdata: z.bdata, shape: String(z.shape)}
                            : Array.from(z, row => Array.from(row)));
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


# Runs in the page on every animation frame until the self-attention panel shows the
# clicked pixel: as many lines naming it as there are layers, and every layer's mean map
# equal to the expected one (np.allclose's rtol=1e-5, atol=1e-7). Returns the wall-clock
# time (ms) of the first frame where that holds, so that the time measured is the
# page's, not that of a poll from Python.
PANEL_SHOWS = """([frames, text, expected]) => {
  const lines = Array.from(document.querySelectorAll('[data-testid="stMarkdownContainer"]'))
    .filter(e => e.textContent.includes(text)).length;
  if (lines !== expected.length) return false;
  const flat = z => {
    if (z && z.bdata) {
      const bytes = Uint8Array.from(atob(z.bdata), c => c.charCodeAt(0));
      return z.dtype === 'f4' ? new Float32Array(bytes.buffer) : new Float64Array(bytes.buffer);
    }
    return Array.from(z, row => Array.from(row)).flat();
  };
  const maps = [];
  for (const f of document.querySelectorAll(frames)) {
    if (!f.contentDocument) return false;
    for (const gd of f.contentDocument.querySelectorAll('.js-plotly-plot')) {
      const t = (gd.data || []).find(t => t.type === 'heatmap' && t.showscale !== false);
      if (t) maps.push(flat(t.customdata || t.z));
    }
  }
  if (maps.length !== expected.length) return false;
  for (let i = 0; i < maps.length; i++) {
    const a = maps[i], b = expected[i];
    if (a.length !== b.length) return false;
    for (let j = 0; j < a.length; j++) if (!(Math.abs(a[j] - b[j]) <= 1e-7 + 1e-5 * Math.abs(b[j]))) return false;
  }
  return performance.timeOrigin + performance.now();
}"""


def open_self_attention(page, layers: int, timeout: float = 60.0):
    """Open the self-attention view, choose to query by clicking, and wait until it is ready to be clicked: the image
    shown, the layers' lines written and a chart drawn in each of its ``layers`` live
    figures (their frames load plotly.js once, when the view opens; that is not a
    click's cost). Returns the image's locator."""
    open_view(page, "Self-attention")
    page.get_by_role("radiogroup", name="Query by").get_by_text("Click", exact=True).click()
    img = page.frame_locator(COMPONENT).locator("img")
    img.wait_for(timeout=timeout * 1000)
    page.get_by_text("query pixel (").first.wait_for(timeout=timeout * 1000)
    page.wait_for_function(
        """([frames, layers]) => {
          const drawn = Array.from(document.querySelectorAll(frames)).filter(f => f.contentDocument &&
            Array.from(f.contentDocument.querySelectorAll('.js-plotly-plot')).some(gd => (gd.data || []).length));
          return drawn.length === layers;
        }""", arg=[LIVE_FIGURE, layers], polling="raf", timeout=timeout * 1000)
    return img


def original_pixel(cx: int, cy: int, shown: tuple[int, int], size: tuple[int, int]) -> tuple[int, int]:
    """The pixel of the original image of ``size`` = (W, H), shown at ``shown`` = (w, h)
    displayed pixels, whose area holds the centre of displayed pixel (cx, cy): worked out
    from the geometry alone (pixel i spans [i w / W, (i + 1) w / W) on the display), in
    integers, and not with the app's own mapping, which the tests check against it."""
    def along(c: int, w: int, big: int) -> int:
        return next(i for i in range(big) if 2 * i * w <= (2 * c + 1) * big < 2 * (i + 1) * w)

    return along(cx, shown[0], size[0]), along(cy, shown[1], size[1])


# In the click component's frame (attnviz.app.click_image): the clickable image's pixels at its natural size, as
# counts of near-white pixels per column and per row (the cross-hair's white core).
WHITE_COUNTS = """i => new Promise(resolve => {
  const read = () => {
    const c = document.createElement('canvas');
    c.width = i.naturalWidth; c.height = i.naturalHeight;
    const g = c.getContext('2d');
    g.drawImage(i, 0, 0);
    const d = g.getImageData(0, 0, c.width, c.height).data;
    const cols = new Array(c.width).fill(0), rows = new Array(c.height).fill(0);
    for (let y = 0; y < c.height; y++) for (let x = 0; x < c.width; x++) {
      const k = 4 * (y * c.width + x);
      if (d[k] > 215 && d[k + 1] > 215 && d[k + 2] > 215) { cols[x]++; rows[y]++; }
    }
    resolve([c.width, c.height, cols, rows]);
  };
  if (i.complete && i.naturalWidth) read(); else i.addEventListener('load', read, {once: true});
})"""


def cross_hair(counts: list[int]) -> float | None:
    """The centre of a cross-hair's bar from per-column (or per-row) counts of its white
    pixels: the mean of the lines holding at least 0.8 of the largest count (the bar
    is two pixels wide); None when nothing is white."""
    top = max(counts)
    if top == 0:
        return None
    lines = [i for i, n in enumerate(counts) if n >= 0.8 * top]
    return sum(lines) / len(lines) + 0.5  # the centre of those pixels


def shown_cross_hair(img) -> tuple[tuple[int, int], tuple[float | None, float | None]]:
    """The clickable image's natural (width, height) and its cross-hair's centre there."""
    w, h, cols, rows = img.evaluate(WHITE_COUNTS)
    return (w, h), (cross_hair(cols), cross_hair(rows))


def click_pixel(page, img, reference, cx: int, cy: int, timeout: float = 30.0):
    """Click displayed pixel (cx, cy) of the self-attention view's image and wait until
    the whole panel has updated: every layer's line names the original pixel under the
    click (``original_pixel``) and every layer's chart shows exactly that pixel's mean
    map from ``reference`` (an ``Analysis`` of the same image and model). Returns the
    original pixel (x, y), the maps shown (one per layer, read again after the wait) and
    the seconds from the mouse click to the first frame that showed all of it."""
    from playwright.sync_api import TimeoutError as PlaywrightTimeout

    shown_w, shown_h = img.evaluate("i => [i.width, i.height]")
    width, height = reference.image_size
    x, y = original_pixel(cx, cy, (shown_w, shown_h), (width, height))
    expected = [reference.query(layer, x, y).mean(0).numpy().ravel().tolist() for layer in reference.self_attn]
    box = img.bounding_box()
    text = f"query pixel ({x}, {y}) of {width}×{height}"
    t0 = time.time()
    page.mouse.click(box["x"] + cx, box["y"] + cy)
    try:
        shown_at = page.wait_for_function(PANEL_SHOWS, arg=[LIVE_FIGURE, text, expected], polling="raf",
                                          timeout=timeout * 1000).json_value()
    except PlaywrightTimeout as exc:
        raise TimeoutError(f"the page did not show the attention maps of pixel ({x}, {y}) "
                           f"within {timeout:.0f} s") from exc
    return (x, y), shown_mean_maps(page), shown_at / 1000 - t0
