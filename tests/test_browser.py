"""The real thing: the app on localhost, driven by Debian's Chromium through Playwright.

Uploads a non-square photo, opens the self-attention view, clicks the image's corners
and pixels inside it, and checks that the panel changes and shows exactly
``Analysis.query`` of the pixel under each click (worked out from the displayed geometry,
not with the app's mapping), and that the cross-hair lands on that pixel. Saves a
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
from PIL import Image

import attnviz
from attnviz import timm_adapter
from attnviz.app import explorer, ui
from attnviz.app.service import sample_images

from .browser import (
    CHROMIUM,
    app_server,
    choose_upload,
    chromium_page,
    click_pixel,
    open_self_attention,
    open_view,
    shown_cross_hair,
    wait_until,
)

pytestmark = pytest.mark.skipif(
    not (Path(CHROMIUM).exists() and shutil.which("chromium")), reason="needs Debian's chromium (CI installs it)")

ARTIFACTS = Path(os.environ.get("ATTNVIZ_TEST_ARTIFACTS", Path(__file__).resolve().parent / "artifacts"))


def _dimmed(photo: Path, out: Path) -> Path:
    """The photo with no near-white pixel left (values scaled to at most 178), so that
    the white core of the page's cross-hair is the only white on the clickable image."""
    Image.open(photo).convert("RGB").point(lambda v: v * 7 // 10).save(out)
    return out


def test_clicking_pixels_shows_their_attention_maps_and_the_cross_hair(tmp_path):
    # The shipped model, the one a user meets; the photo is non-square (451 x 300).
    photo = _dimmed(sample_images()["cat"], tmp_path / "cat.png")
    reference = attnviz.analyze(photo, attnviz.load_model("sa_resnet18"))
    width, height = reference.image_size
    assert width != height

    with app_server() as url, chromium_page() as page:
        page.goto(url)
        choose_upload(page).set_input_files(str(photo))
        page.get_by_text(f"{photo.name} ({width}×{height})").wait_for(timeout=120_000)
        img = open_self_attention(page, len(reference.self_attn))
        shown_w, shown_h = img.evaluate("i => [i.width, i.height]")

        maps, times = [], []
        # the four corners of the image, then pixels inside it
        clicks = [(0, 0), (shown_w - 1, shown_h - 1), (shown_w - 1, 0), (0, shown_h - 1),
                  *[(round(fx * shown_w), round(fy * shown_h)) for fx, fy in [(0.7, 0.75), (0.45, 0.4), (0.3, 0.6)]]]
        for cx, cy in clicks:
            (x, y), shown, seconds = click_pixel(page, img, reference, cx, cy)
            times.append(seconds)
            assert len(shown) == len(reference.self_attn) == 2  # both layers updated
            for m, name in zip(shown, reference.self_attn):
                np.testing.assert_allclose(m, reference.query(name, x, y).mean(0).numpy(), rtol=1e-5, atol=1e-7)
                row, col = reference.cell(name, x, y)
                page.get_by_text(f"cell (row {row}, col {col})").first.wait_for(timeout=10_000)
            # The cross-hair on the clickable image sits on the centre of pixel (x, y).
            wait_until(page, lambda: _cross_hair_near(img, x, y, width, height), f"the cross-hair on ({x}, {y})", 10)
            maps.append(shown[0])

        assert not np.allclose(maps[0], maps[1])  # the panel changed with the click
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(ARTIFACTS / "browser_self_attention.png"), full_page=True)
    print(f"\nclick -> updated panel: median {statistics.median(times) * 1000:.0f} ms, "
          f"all {[round(t * 1000) for t in times]} ms")


def _cross_hair_near(img, x: int, y: int, width: int, height: int) -> bool:
    """Whether the clickable image's cross-hair is within 1.5 of its pixels of the centre
    of original pixel (x, y), the image being (width, height)."""
    (nat_w, nat_h), (sx, sy) = shown_cross_hair(img)
    return (sx is not None and sy is not None and abs(sx - (x + 0.5) * nat_w / width) <= 1.5
            and abs(sy - (y + 0.5) * nat_h / height) <= 1.5)


READ_DRAWN = """() => {
  const s = document.querySelector('.avx-root').__attnviz;
  const out = {query: s.query, pins: s.pins, layers: {}};
  for (const [name, d] of Object.entries(s.drawn))
    out.layers[name] = {mean: Array.from(d.mean), heads: d.heads.map(h => Array.from(h)), cell: d.cell, query: d.query};
  return out;
}"""


def _hover_to(page, x: float, y: float, previous: str) -> dict:
    page.mouse.move(x, y)
    page.wait_for_function("prev => document.querySelector('.avx-root').dataset.query !== prev", arg=previous,
                           timeout=10_000)
    return page.evaluate(READ_DRAWN)


def test_hovering_draws_the_apis_maps_in_the_browser_without_asking_the_server(tmp_path):
    photo = _dimmed(sample_images()["cat"], tmp_path / "cat.png")  # non-square: 451 x 300
    model = attnviz.load_model("sa_resnet18")
    reference = attnviz.analyze(photo, model)
    width, height = reference.image_size
    steps = {name: explorer.quantise(t)[0] for name, t in reference.self_attn.items()}  # (heads, N) each

    with app_server() as url, chromium_page() as page:
        sent = []
        page.on("websocket", lambda ws: ws.on("framesent", lambda payload: sent.append(payload)))
        page.goto(url)
        choose_upload(page).set_input_files(str(photo))
        page.get_by_text(f"{photo.name} ({width}×{height})").wait_for(timeout=120_000)
        open_view(page, "Self-attention")  # hover is the default
        page.wait_for_function("() => document.querySelector('.avx-root')?.dataset.ready === '1'", timeout=60_000)
        box = page.locator("canvas.avx-photo").bounding_box()
        before = len(sent)
        assert before > 0  # the listener sees the page's messages (the upload, the view)
        query = page.evaluate("() => document.querySelector('.avx-root').dataset.query")
        corners = {(0, 0): (0.5, 0.5), (width - 1, height - 1): (box["width"] - 0.5, box["height"] - 0.5),
                   (width - 1, 0): (box["width"] - 0.5, 0.5), (0, height - 1): (0.5, box["height"] - 0.5)}
        inside = [(0.3 * box["width"], 0.6 * box["height"]), (0.71 * box["width"], 0.22 * box["height"])]
        for expected, (dx, dy) in [*corners.items(), *[(None, d) for d in inside]]:
            shown = _hover_to(page, box["x"] + dx, box["y"] + dy, query)
            x, y = shown["query"]
            query = f"{x},{y}"
            if expected is not None:
                assert (x, y) == expected  # the image's corners
            else:  # the pixel under the pointer, to within one displayed pixel
                assert abs((x + 0.5) * box["width"] / width - dx) <= box["width"] / width / 2 + 1
                assert abs((y + 0.5) * box["height"] / height - dy) <= box["height"] / height / 2 + 1
            for name, drawn in shown["layers"].items():
                h, w = reference.self_attn_grid[name]
                row, col = reference.cell(name, x, y)
                assert drawn["cell"] == [row, col] and drawn["query"] == [x, y]
                exact = reference.query(name, x, y).reshape(len(drawn["heads"]), -1).numpy()
                step = steps[name][:, row * w + col]
                # every head within half a quantisation step of the API, and the mean within the mean step
                assert (np.abs(np.array(drawn["heads"]) - exact) <= step[:, None] / 2 + 1e-6).all()
                assert np.abs(np.array(drawn["mean"]) - exact.mean(0)).max() <= step.mean() / 2 + 1e-6
        page.wait_for_timeout(300)
        assert len(sent) == before  # hovering sent nothing to the server

        # A click pins the pixel: the URL keeps it, so the view can be shared.
        page.mouse.click(box["x"] + inside[0][0], box["y"] + inside[0][1])
        pinned = page.evaluate(READ_DRAWN)["pins"]
        assert len(pinned) == 1
        page.wait_for_url(f"**pins={pinned[0][0]}%2C{pinned[0][1]}**", timeout=20_000)
        assert page.locator(".avx-pin").count() == 1
        # Arrow keys move the query one cell of the finest layer.
        finest = max(reference.self_attn, key=lambda n: reference.self_attn_grid[n][0])
        start = page.evaluate(READ_DRAWN)["layers"][finest]["cell"]
        page.keyboard.press("ArrowDown")
        page.wait_for_function("prev => document.querySelector('.avx-root').dataset.query !== prev",
                               arg=",".join(map(str, pinned[0])), timeout=10_000)
        assert page.evaluate(READ_DRAWN)["layers"][finest]["cell"] == [start[0] + 1, start[1]]
        # Removing the pin empties the strip and the URL.
        page.get_by_role("button", name="remove pin 1").click()
        page.wait_for_url(lambda u: "pins=" not in u, timeout=20_000)
        assert page.locator(".avx-pin").count() == 0
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(ARTIFACTS / "browser_hover_explorer.png"), full_page=True)


def test_on_a_touch_screen_a_tap_pins_the_tapped_pixel_of_a_12_mp_photo(tmp_path):
    """A phone's 12 MP photo (4000 x 3000) on a touch screen: the browser gets a display
    copy, not the upload; each tap pins the pixel of the original image under the finger
    and draws that pixel's maps, equal to the API's within the quantisation step."""
    photo = tmp_path / "phone.jpg"
    Image.open(sample_images()["cat"]).convert("RGB").resize((4000, 3000), Image.BILINEAR).save(photo, quality=90)
    reference = attnviz.analyze(photo, attnviz.load_model("sa_resnet18"))
    assert reference.image_size == (4000, 3000)
    sent = len(explorer.payload(reference, "Viridis", 0.6))
    weights = sum(t.numel() + 4 * t.shape[0] * t.shape[1] for t in reference.self_attn.values())  # codes, scales
    assert sent - weights < 200_000  # besides the attention: lookup tables, a header and a 512 px photo
    steps = {name: explorer.quantise(t)[0] for name, t in reference.self_attn.items()}

    with app_server() as url, chromium_page(touch=True) as page:
        page.goto(url)
        choose_upload(page).set_input_files(str(photo))
        page.get_by_text(f"{photo.name} (4000×3000)").wait_for(timeout=120_000)
        open_view(page, "Self-attention")
        page.wait_for_function("() => document.querySelector('.avx-root')?.dataset.ready === '1'", timeout=60_000)
        canvas = page.locator("canvas.avx-photo")
        box = canvas.bounding_box()
        assert canvas.evaluate("c => c.width * c.height") <= 512 * 512  # drawn from the display copy
        for i, (fx, fy) in enumerate([(0.27, 0.41), (0.83, 0.66)]):
            dx, dy = fx * box["width"], fy * box["height"]
            page.touchscreen.tap(box["x"] + dx, box["y"] + dy)
            page.wait_for_function("n => document.querySelector('.avx-root').__attnviz.pins.length === n",
                                   arg=i + 1, timeout=10_000)
            shown = page.evaluate(READ_DRAWN)
            x, y = shown["pins"][i]
            assert shown["query"] == [x, y]
            assert abs((x + 0.5) * box["width"] / 4000 - dx) <= box["width"] / 4000 / 2 + 1
            assert abs((y + 0.5) * box["height"] / 3000 - dy) <= box["height"] / 3000 / 2 + 1
            for name, drawn in shown["layers"].items():
                h, w = reference.self_attn_grid[name]
                row, col = reference.cell(name, x, y)
                assert drawn["cell"] == [row, col] and drawn["query"] == [x, y]
                exact = reference.query(name, x, y).reshape(len(drawn["heads"]), -1).numpy()
                step = steps[name][:, row * w + col, None]
                assert (np.abs(np.array(drawn["heads"]) - exact) <= step / 2 + 1e-6).all()
        page.wait_for_url("**pins=*%3B*", timeout=20_000)  # both pins in the URL
        assert page.locator(".avx-pin").count() == 2


# Makes every JavaScript blob URL unusable, as a Content-Security-Policy without blob:
# scripts would: the explorer's inline module (loaded from a blob) cannot run.
BLOCK_SCRIPT_BLOBS = """(() => { const make = URL.createObjectURL.bind(URL);
  URL.createObjectURL = b => (b && b.type && b.type.includes('javascript')) ? 'blob:blocked' : make(b); })()"""


def test_where_the_explorer_cannot_run_the_page_says_so_and_clicking_still_works():
    photo = sample_images()["cat"]
    reference = attnviz.analyze(photo, attnviz.load_model("sa_resnet18"))
    with app_server() as url, chromium_page() as page:
        page.add_init_script(BLOCK_SCRIPT_BLOBS)
        page.goto(url)
        choose_upload(page).set_input_files(str(photo))
        page.get_by_text(f"{photo.name} ({reference.image_size[0]}×{reference.image_size[1]})").wait_for(
            timeout=120_000)
        open_view(page, "Self-attention")
        page.get_by_text(ui.EXPLORER_FALLBACK).wait_for(timeout=60_000)
        assert page.evaluate("() => document.querySelector('.avx-root')?.dataset.ready") is None  # it never started
        img = open_self_attention(page, len(reference.self_attn))
        (x, y), shown, _ = click_pixel(page, img, reference, 40, 30)
        for m, name in zip(shown, reference.self_attn):
            np.testing.assert_allclose(m, reference.query(name, x, y).mean(0).numpy(), rtol=1e-5, atol=1e-7)


# The bar of ``channel`` in the gate bars whose title holds ``title``: its centre, halfway up, in page pixels.
BAR_CENTRE = """([title, channel]) => {
  const gd = Array.from(document.querySelectorAll('.js-plotly-plot'))
    .find(g => ((g.layout.title || {}).text || '').includes(title));
  const xa = gd._fullLayout.xaxis, ya = gd._fullLayout.yaxis, r = gd.getBoundingClientRect();
  const bar = gd._fullData[0], i = Array.from(bar.customdata).indexOf(channel);  // decoded arrays
  return [r.left + xa._offset + xa.l2p(i), r.top + ya._offset + ya.l2p(bar.y[i] / 2)];
}"""

# The first heatmap of the chart whose title holds the given text, flattened.
CHART_MAP = """title => {
  const gd = Array.from(document.querySelectorAll('.js-plotly-plot'))
    .find(g => ((g.layout.title || {}).text || '').includes(title));
  if (!gd) return null;
  const z = gd.data.find(t => t.type === 'heatmap').z;
  if (z.bdata) {
    const b = Uint8Array.from(atob(z.bdata), c => c.charCodeAt(0));
    return Array.from(z.dtype === 'f4' ? new Float32Array(b.buffer) : new Float64Array(b.buffer));
  }
  return Array.from(z, row => Array.from(row)).flat();
}"""


def test_the_se_view_runs_an_intervention_and_drills_into_a_clicked_channel():
    from playwright.sync_api import TimeoutError as PlaywrightTimeout

    from attnviz.features import block_features
    from attnviz.intervene import intervene, shipped_profile

    # The shipped model and the sample the page opens on.
    photo = next(iter(sample_images().values()))
    model = attnviz.load_model("se_resnet18")
    profile = shipped_profile(model)  # the panel opens on the mean gates
    whole = ui.intervention_summary(intervene(photo, model, "gates-mean", profile=profile))
    one_block = ui.intervention_summary(intervene(photo, model, "gates-mean", "layer3.1", profile=profile))
    f = block_features(photo, model, "layer4.1")
    channel = int(f.extremes(40)[0][-1])  # a tall bar, not the tallest
    line = ui.channel_line("layer4.1", channel, float(f.gates[channel]), f.rank(channel), len(f.gates))
    with app_server() as url, chromium_page(height=1400) as page:
        page.goto(url)
        open_view(page, "SE")
        page.get_by_text(whole).wait_for(timeout=120_000)  # the panel opens on the whole model
        for _attempt in range(3):  # a rerun under way can close the list as it opens: open it again
            page.locator('[data-testid="stSelectbox"]').filter(has_text="Where").click()
            try:
                page.get_by_role("option", name="layer3.1", exact=True).wait_for(timeout=10_000)
                break
            except PlaywrightTimeout:
                page.keyboard.press("Escape")
        t0 = time.monotonic()
        page.get_by_role("option", name="layer3.1", exact=True).click()
        page.get_by_text(one_block).wait_for(timeout=30_000)
        intervened = time.monotonic() - t0

        bars = page.locator(".js-plotly-plot").filter(has_text="layer4.1: 256 channels")
        bars.scroll_into_view_if_needed()
        x, y = page.evaluate(BAR_CENTRE, ["layer4.1: 256 channels", channel])
        page.mouse.move(x, y)
        page.wait_for_timeout(200)  # plotly picks the clicked point from its hover
        t0 = time.monotonic()
        page.mouse.click(x, y)
        page.get_by_text(line.replace("**", "")).wait_for(timeout=30_000)
        drilled = time.monotonic() - t0
        title = f"layer4.1 channel {channel}"
        wait_until(page, lambda: page.evaluate(CHART_MAP, title) is not None, title, 30)
        np.testing.assert_allclose(page.evaluate(CHART_MAP, title), f.before[channel].numpy().ravel(), rtol=1e-6)
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(ARTIFACTS / "browser_se_drill_intervene.png"), full_page=True)
    print(f"\nintervention -> shown: {intervened * 1000:.0f} ms; bar click -> drill-down: {drilled * 1000:.0f} ms")


def test_a_timm_model_with_an_uploaded_checkpoint_is_listed_and_its_attention_drawn(tmp_path):
    """Issue 22: "Your own model" loads a timm BoTNet from a checkpoint file; the page lists
    its ImageNet predictions and the line of what it found, and the self-attention view
    draws exactly its ``Analysis.query`` for a clicked pixel."""
    timm = pytest.importorskip("timm")
    import torch
    from safetensors.torch import save_file

    torch.manual_seed(0)
    state = timm.create_model("botnet26t_256", pretrained=False).state_dict()
    ckpt = tmp_path / "botnet.safetensors"
    save_file({k: v.contiguous() for k, v in state.items()}, str(ckpt))
    photo = sample_images()["temple"]  # the page's default sample
    reference = attnviz.analyze(photo, attnviz.load_model("timm:botnet26t_256", checkpoint=ckpt))

    with app_server() as url, chromium_page() as page:
        page.goto(url)
        page.locator("[data-top5]").nth(3).wait_for(timeout=120_000)  # the first page is done: no rerun under way
        page.get_by_text("Your own model (timm").click()
        # Chosen with the keyboard: the list is long, and a click on its option (or typing to
        # filter it) kept missing as the list was laid out again under the pointer. Keys
        # pressed while the list is still opening are lost: settle, and try again if so.
        arch = page.get_by_role("combobox", name="Architecture")
        options = [*timm_adapter.SUPPORTED, "cbam:resnet50"]  # the sidebar's list, in its order
        for _ in range(3):
            # the open list starts on the chosen option: step from there (a missed try has moved it)
            steps = options.index("botnet26t_256") - options.index(arch.input_value().split(": ", 1)[0])
            arch.click()
            page.wait_for_timeout(300)
            for _ in range(abs(steps)):
                page.keyboard.press("ArrowDown" if steps > 0 else "ArrowUp")
            page.keyboard.press("Enter")
            page.wait_for_timeout(300)
            if arch.input_value().startswith("botnet26t_256:"):
                break
            page.keyboard.press("Escape")
        assert arch.input_value().startswith("botnet26t_256:"), arch.input_value()
        page.locator('[data-testid="stFileUploader"]').filter(has_text="Checkpoint").locator(
            'input[type="file"]').set_input_files(str(ckpt))
        page.get_by_role("button", name="Load this model").click(timeout=120_000)  # shown once uploaded
        name = "timm:botnet26t_256 (uploaded"
        page.get_by_text(name).first.wait_for(timeout=180_000)
        page.get_by_text("attention found: 3 self_attn").first.wait_for(timeout=120_000)
        top1 = reference.top_k(1)[0][0]
        page.locator("[data-top5]").filter(has_text=top1).first.wait_for(timeout=60_000)  # its top-5
        open_view(page, "Self-attention")
        page.get_by_role("combobox", name="Model").click()
        page.get_by_role("option", name=name).click()
        img = open_self_attention(page, len(reference.self_attn), timeout=120)
        shown_w, shown_h = img.evaluate("i => [i.width, i.height]")
        (x, y), shown, _ = click_pixel(page, img, reference, shown_w // 3, shown_h // 2, timeout=60)
        assert len(shown) == 3
        for m, layer in zip(shown, reference.self_attn):
            np.testing.assert_allclose(m.ravel(), reference.query(layer, x, y).mean(0).numpy().ravel(),
                                       rtol=1e-5, atol=1e-7)
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(ARTIFACTS / "timm_botnet_self_attention.png"), full_page=True)
