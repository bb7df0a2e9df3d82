"""Page flows with Streamlit's AppTest (no browser), on the tiny random-weight models."""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import plotly.graph_objects as go
import pytest
import torch
from streamlit.testing.v1 import AppTest

import attnviz
from attnviz import figures
from attnviz.app import ui
from attnviz.app.service import image_key, sample_images
from attnviz.cam import grad_cam
from attnviz.models import ARCHITECTURES

from .browser import original_pixel
from .conftest import handle_key, noise_image, page_top5s, plotly_array, upload_key

APP = str(Path(__file__).resolve().parent.parent / "app.py")


@pytest.fixture
def app(tiny_env, monkeypatch):
    # Only the tiny models: shipped weights, if any, are not what these tests check.
    monkeypatch.setattr("attnviz.weights.SHIPPED_DIR", Path("/nonexistent"))
    at = AppTest.from_file(APP, default_timeout=120)
    at.run()
    assert not at.exception, at.exception
    return at


def _app_with_only(weights_dir: Path, monkeypatch) -> AppTest:
    """The app, run once, seeing only the weights pairs in ``weights_dir``."""
    monkeypatch.setenv("ATTNVIZ_WEIGHTS_DIR", str(weights_dir))
    monkeypatch.setattr("attnviz.weights.SHIPPED_DIR", Path("/nonexistent"))
    at = AppTest.from_file(APP, default_timeout=120)
    at.run()
    return at


def _png(w=120, h=80, seed=1) -> bytes:
    buf = io.BytesIO()
    noise_image(w, h, seed).save(buf, "PNG")
    return buf.getvalue()


def _charts(at):
    return at.get("plotly_chart")


def _live_figures(at) -> list[dict]:
    """The figures of the live charts (attnviz.app.live_figure) on the page, as JSON."""
    return [json.loads(json.loads(c.proto.json_args)["figure"]) for c in at.get("component_instance")
            if c.proto.component_name.endswith("live_figure")]


def test_first_open_shows_predictions_of_every_model_for_a_sample(app):
    assert app.radio(key="source").value == "Sample"
    assert app.selectbox(key="sample").value == "temple" == next(iter(sample_images()))  # a church
    assert len(page_top5s(app)) == len(ARCHITECTURES)  # top-5 of every tiny model side by side, as HTML: no chart
    assert not _charts(app)
    assert not app.error


@pytest.mark.parametrize("view, how, charts, live, explorers", [
    # SE: overview, drill-down (maps, thumbnails), intervention, one block's bar chart;
    # CBAM: 8 spatial maps and Grad-CAM beside them, overview, bars, drill-down, intervention;
    # self-attention: Grad-CAM, intervention
    ("SE", None, 1 + 2 + 1 + 1, 0, 0), ("CBAM", None, 8 + 1 + 2 + 2 + 1, 0, 0),
    ("Self-attention", "Hover", 1 + 1, 0, 1), ("Self-attention", "Click", 1 + 1, 2, 0), ("Axial", None, 3 * 3, 0, 0),
    ("Compare", None, 3 + 3, 0, 0)])
def test_every_view_renders(app, view, how, charts, live, explorers):
    app.radio(key="view").set_value(view).run()
    if how:
        app.radio(key="self_attn-how").set_value(how).run()
    assert len(app.get("bidi_component")) == explorers
    assert not app.exception, app.exception
    assert (len(_charts(app)), len(_live_figures(app))) == (charts, live)


def test_cbam_shows_another_cbam_model_beside_it_layer_by_layer(app):
    app.radio(key="view").set_value("CBAM").run()
    shared_key, unshared_key = handle_key("tiny_cbam_resnet18"), handle_key("tiny_cbam_unshared_resnet18")
    app.selectbox(key="cbam-model").set_value(shared_key).run()
    beside = app.selectbox(key=f"cbam-beside-{shared_key}")
    assert beside.value == "" and beside.options == ["nothing", "tiny_cbam_unshared_resnet18"]
    beside.set_value(unshared_key).run()
    assert not app.exception, app.exception
    data = next(iter(sample_images().values())).read_bytes()
    left, right = (attnviz.analyze(data, attnviz.load_model(n)) for n in
                   ("tiny_cbam_resnet18", "tiny_cbam_unshared_resnet18"))
    figs = [json.loads(c.proto.spec) for c in _charts(app)]
    maps = [plotly_array(f["data"][0]["z"]) for f in figs[:16]]  # this model's, then the other's, per layer
    for i, path in enumerate(left.cbam_spatial):
        np.testing.assert_allclose(maps[2 * i], left.cbam_spatial[path].numpy(), rtol=1e-6)
        np.testing.assert_allclose(maps[2 * i + 1], right.cbam_spatial[path].numpy(), rtol=1e-6)
        assert figs[2 * i]["data"][0]["zmin"] == figs[2 * i + 1]["data"][0]["zmin"] == 0
        assert figs[2 * i]["data"][0]["zmax"] == figs[2 * i + 1]["data"][0]["zmax"] == 1
    assert not np.allclose(maps[0], maps[1])  # two models, two maps
    assert any("tiny_cbam_unshared_resnet18" in c.value for c in app.caption)


def test_compare_sets_grad_cam_of_each_model_under_its_attention(app):
    app.radio(key="view").set_value("Compare").run()
    assert not app.exception, app.exception
    figs = [json.loads(c.proto.spec) for c in _charts(app)]
    cams = [f for f in figs if f["data"][0].get("colorbar", {}).get("title", {}).get("text") == figures.CAM_AXIS]
    assert len(cams) == 3  # under SE's gates, CBAM's spatial gate and the self-attention map
    data = next(iter(sample_images().values())).read_bytes()
    for fig, name in zip(cams, ("tiny_se_resnet18", "tiny_cbam_resnet18", "tiny_sa_resnet18")):
        r = grad_cam(data, attnviz.load_model(name))
        np.testing.assert_allclose(plotly_array(fig["data"][0]["z"]), r.map.numpy(), atol=1e-6)
        assert r.class_name in fig["layout"]["title"]["text"] and fig["data"][0]["zmax"] == 1
    assert ui.EXPLAIN["grad_cam"] in [c.value for c in app.caption]


@pytest.mark.parametrize("view, how, cmap_key, model", [
    ("CBAM", None, "cbam-cmap", "tiny_cbam_resnet18"),
    ("Self-attention", "Click", "self_attn-cmap", "tiny_sa_resnet18")])
def test_grad_cam_is_drawn_beside_the_attention_in_its_colour_map(app, view, how, cmap_key, model):
    app.radio(key="view").set_value(view).run()
    if how:
        app.radio(key="self_attn-how").set_value(how).run()
    app.selectbox(key=cmap_key).set_value("Inferno").run()
    assert not app.exception, app.exception
    figs = [json.loads(c.proto.spec) for c in _charts(app)]
    (cam,) = [f for f in figs if f["data"][0].get("colorbar", {}).get("title", {}).get("text") == figures.CAM_AXIS]
    r = grad_cam(next(iter(sample_images().values())).read_bytes(), attnviz.load_model(model))
    np.testing.assert_allclose(plotly_array(cam["data"][0]["z"]), r.map.numpy(), atol=1e-6)
    assert cam["data"][0]["colorscale"] == json.loads(json.dumps(go.Heatmap(colorscale="Inferno").colorscale))
    assert ui.EXPLAIN["grad_cam_beside"] in [c.value for c in app.caption]


def test_upload_is_analysed(app):
    sample = page_top5s(app)
    data = _png()
    app.radio(key="source").set_value("Upload").run()
    app.file_uploader(key="upload").set_value(("mine.png", data, "image/png")).run()
    assert not app.exception and not app.error
    shown = page_top5s(app)
    expected = [attnviz.analyze(data, attnviz.load_model(n)).top_k(5) for n in attnviz.available_models()]
    assert len(shown) == len(expected) == len(ARCHITECTURES)
    for bars, top in zip(shown, expected):  # every model's bars are the uploaded image's predictions
        assert [n for n, _ in bars] == [n for n, _ in top]
        np.testing.assert_allclose([p for _, p in bars], [p for _, p in top], rtol=1e-6)
    assert shown != sample


def test_bad_upload_gives_one_clear_line_and_the_app_stays_up(app):
    app.radio(key="source").set_value("Upload").run()
    app.file_uploader(key="upload").set_value(("cat.jpg", b"<html>not an image</html>", "image/jpeg")).run()
    assert not app.exception
    assert len(app.error) == 1 and "not a readable image" in app.error[0].value
    assert "\n" not in app.error[0].value
    app.file_uploader(key="upload").set_value(("ok.png", _png(), "image/png")).run()
    assert not app.exception and not app.error and len(page_top5s(app)) == len(ARCHITECTURES)


@pytest.mark.parametrize("click", [(112, 168), (0, 0), (447, 223), (447, 0), (0, 223)])
def test_a_simulated_click_moves_the_query_to_the_pixel_under_it(app, click):
    data = _png(200, 100, seed=3)
    app.radio(key="source").set_value("Upload").run()
    app.file_uploader(key="upload").set_value(("wide.png", data, "image/png")).run()
    app.radio(key="view").set_value("Self-attention").run()
    app.radio(key="self_attn-how").set_value("Click").run()
    click_key = f"self_attn-click-{image_key(data)[:16]}-{handle_key('tiny_sa_resnet18')}"
    # The component reports displayed pixels: the 200x100 image is shown 448 px wide.
    app.session_state[click_key] = {"x": click[0], "y": click[1], "width": 448, "height": 224, "unix_time": 1}
    app.run()
    assert not app.exception, app.exception
    x, y = original_pixel(*click, (448, 224), (200, 100))
    text = " ".join(m.value for m in app.markdown)
    assert f"query pixel ({x}, {y}) of 200×100" in text
    a = attnviz.analyze(data, attnviz.load_model("tiny_sa_resnet18"))
    row, col = a.cell("layer2.1.attn.softmax", x, y)
    assert f"cell (row {row}, col {col}) of 8×8" in text
    # the weights themselves: a linear scale, every cell coloured
    app.selectbox(key="self_attn-scale").set_value("linear")
    app.slider(key="self_attn-mass").set_value(100).run()
    spec = _live_figures(app)[0]
    heat = next(t for t in spec["data"] if t["type"] == "heatmap")
    expected = a.query("layer2.1.attn.softmax", x, y).mean(0)
    torch.testing.assert_close(torch.from_numpy(plotly_array(heat["z"])).float(), expected)
    assert heat["zmax"] == pytest.approx(float(a.self_attn["layer2.1.attn.softmax"].max()))  # one scale per layer
    black = next(t for t in spec["data"] if t["type"] == "scatter")  # the cross-hair's arms end at that cell
    ends = {(px, py) for px, py in zip(black["x"], black["y"]) if px is not None}
    x0, y0 = col * 200 / 8, row * 100 / 8
    assert (x0, y0 + 100 / 16) in ends and (x0 + 200 / 16, y0) in ends


def test_se_view_draws_the_shipped_class_profile_with_this_image(tiny_weights_dir, tmp_path, monkeypatch):
    import shutil

    from attnviz.profile import SEProfile, profile_path

    for f in tiny_weights_dir.glob("tiny_se_resnet18.*"):
        shutil.copy(f, tmp_path / f.name)
    blocks = [f"layer{s}.{b}.se.gate" for s in range(1, 5) for b in range(2)]
    widths = [8, 8, 16, 16, 32, 32, 64, 64]
    prof = SEProfile(model="tiny_se_resnet18", classes=["alpha", "beta"], images=4,
                     means={b: [[0.25] * w, [0.75] * w] for b, w in zip(blocks, widths)},
                     specificity={b: 0.5 for b in blocks})
    profile_path(tmp_path / "tiny_se_resnet18.safetensors").write_text(prof.to_json())
    at = _app_with_only(tmp_path, monkeypatch)
    at.radio(key="view").set_value("SE").run()
    assert not at.exception, at.exception
    spec = next(s for s in (json.loads(c.proto.spec) for c in _charts(at))
                if "class specificity" in s["layout"].get("title", {}).get("text", ""))
    names = [t.get("name") for t in spec["data"]]
    assert names == ["alpha", "beta", "this image"]
    assert "class specificity 0.50" in spec["layout"]["title"]["text"]


def test_own_weights_can_be_uploaded_and_a_bad_pair_is_refused(app, tiny_weights_dir):
    weights = (tiny_weights_dir / "tiny_se_resnet18.safetensors").read_bytes()
    meta = (tiny_weights_dir / "tiny_se_resnet18.json").read_bytes()
    damaged = weights[:-8] + b"\0" * 8
    app.file_uploader(key="own-weights").set_value(("mine.safetensors", damaged, "application/octet-stream"))
    app.file_uploader(key="own-meta").set_value(("mine.json", meta, "application/json")).run()
    app.button(key="own-load").click().run()
    assert not app.exception
    assert len(app.error) == 1 and "sha256" in app.error[0].value
    app.file_uploader(key="own-weights").set_value(("mine.safetensors", weights, "application/octet-stream")).run()
    app.button(key="own-load").click().run()
    assert not app.exception and not app.error
    assert any("(uploaded " in s.value for s in app.success)
    assert len(page_top5s(app)) == len(ARCHITECTURES) + 1  # every tiny model and the uploaded one


def test_the_self_attention_view_says_how_much_each_head_attends_and_warns_when_uniform(tmp_path, monkeypatch):
    from attnviz.layers import SelfAttention2d
    from attnviz.weights import save_pair

    from .conftest import tiny_meta, tiny_model

    model = tiny_model("sa_resnet18")
    flat = model.layer3[1].attn  # q = 0: every cosine is 0; slope 0: no position term: rows 1/N
    assert isinstance(flat, SelfAttention2d)
    with torch.no_grad():
        flat.q.weight.zero_()
        flat.slope.zero_()
    save_pair(model, tiny_meta("sa_resnet18", "tiny_flat_sa"), tmp_path)
    at = _app_with_only(tmp_path, monkeypatch)
    at.radio(key="view").set_value("Self-attention").run()
    at.radio(key="self_attn-how").set_value("Click").run()
    assert not at.exception, at.exception
    assert any("query-dependence" in c.value and "entropy" in c.value for c in at.caption)
    warnings = [w.value for w in at.warning]
    assert warnings == ["Near uniform (entropy ÷ log N in brackets): layer3.1 heads 0 (1.00), 1 (1.00), 2 (1.00), "
                        "3 (1.00). Such a head spreads its attention almost evenly: it acts like an average, not a "
                        "lookup."]  # one warning for every such head
    layer2, layer3 = _live_figures(at)
    tiles = [a["text"] for a in layer3["layout"]["annotations"] if a["text"].startswith("head")]
    assert tiles == [f"head {i}<br>entropy 1.00 · query-dep. 0.00" for i in range(4)]
    assert not any("entropy 1.00" in a["text"] for a in layer2["layout"]["annotations"])
    for fig, n in ((layer2, 64), (layer3, 16)):  # the colour bar marks the uniform level 1/N where it is drawn
        heat = next(t for t in fig["data"] if t["type"] == "heatmap" and t.get("showscale"))
        bar, scale = heat["colorbar"], at.selectbox(key="self_attn-scale").value
        assert f"uniform 1/{n}" in bar["ticktext"] and scale == "log"  # the default
        assert bar["tickvals"][bar["ticktext"].index(f"uniform 1/{n}")] == pytest.approx(
            float(figures.scaled(1 / n, heat["zmax"], scale)) * heat["zmax"])


def _hooks(model) -> int:
    return sum(len(m._forward_hooks) + len(m._forward_pre_hooks) for m in model.modules())


def test_an_intervention_shows_before_and_after_and_leaks_into_nothing(app):
    from attnviz.app.service import shared
    from attnviz.features import block_features

    data = next(iter(sample_images().values())).read_bytes()
    registry, results = shared()
    handle = registry.handle("tiny_se_resnet18")
    model, key = handle.model, handle.key
    cached = results.get(data, handle)
    probs, gates = cached.probs.clone(), {k: v.clone() for k, v in cached.se.items()}
    app.radio(key="view").set_value("SE").run()
    app.selectbox(key=f"se-iv-what-{key}").set_value("knockout-top").run()
    app.selectbox(key=f"se-iv-where-{key}").set_value("layer2.0").run()
    app.number_input(key=f"se-iv-k-{key}").set_value(3).run()
    assert not app.exception and not app.error
    r = attnviz.intervene(data, attnviz.load_model("tiny_se_resnet18"), "knockout-top", "layer2.0", k=3)
    assert ui.intervention_summary(r) in [m.value for m in app.markdown]
    bars = next(s for s in (json.loads(c.proto.spec) for c in _charts(app)) if "before (grey)" in str(s["layout"]))
    now, was = bars["data"]
    names = [n.replace("<b>", "").replace("</b>", "") for n in was["y"]]
    np.testing.assert_allclose(plotly_array(now["x"]), [float(r.after[r.classes.index(n)]) for n in names], rtol=1e-6)
    # nothing stays behind: no hook on the shared model, the cached analysis as it was and
    # still what a fresh analysis gives
    assert _hooks(model) == 0
    assert results.get(data, handle) is cached
    assert torch.equal(cached.probs, probs) and all(torch.equal(cached.se[k], v) for k, v in gates.items())
    torch.testing.assert_close(attnviz.analyze(data, model).probs, probs)
    # a bad setting is one line, and the page stays up
    app.number_input(key=f"se-iv-k-{key}").set_value(99).run()
    assert not app.exception
    assert [e.value for e in app.error] == ["This intervention can't run: k = 99 is more than the 16 channels "
                                            "of layer2.0.se.gate"]
    # every option on the whole model, on request: how far each moves the prediction
    app.number_input(key=f"se-iv-k-{key}").set_value(3).run()
    app.toggle(key=f"se-iv-all-{key}").set_value(True).run()
    table = next(m.value for m in app.markdown if m.value.startswith("| on the whole model"))
    for what, k in (("gates-off", None), ("knockout-top", 8)):
        assert ui.effect_line(attnviz.intervene(data, model, what, k=k)) in table
    # the drill-down: a click on a channel sets these two keys (ui.picked_channel)
    app.session_state[f"se-drill-block-{key}"], app.session_state[f"se-drill-channel-{key}"] = "layer3.1.se.gate", 5
    app.run()
    f = block_features(data, model, "layer3.1")
    line = ui.channel_line("layer3.1", 5, float(f.gates[5]), f.rank(5), 32)
    assert line in [m.value for m in app.markdown]
    maps = next(s for s in (json.loads(c.proto.spec) for c in _charts(app)) if "layer3.1 channel 5" in str(s["layout"]))
    before, after = (plotly_array(t["z"]) for t in maps["data"])
    np.testing.assert_allclose(before, f.before[5].numpy(), rtol=1e-6)
    np.testing.assert_allclose(after, f.before[5].numpy() * float(f.gates[5]), rtol=1e-5, atol=1e-6)


def test_own_axial_weights_show_each_step_on_the_clicked_pixels_line_and_the_composed_map(tmp_path, monkeypatch,
                                                                                             tiny_weights_dir):
    # Without the shipped weights, a user's own pair (here a random-init one) is what the view shows.
    import shutil

    for f in tiny_weights_dir.glob("tiny_sa_resnet18.*"):
        shutil.copy(f, tmp_path / f.name)
    at = _app_with_only(tmp_path, monkeypatch)
    at.radio(key="view").set_value("Axial").run()
    assert not at.exception and any("No model with axial attention" in i.value for i in at.info)
    weights = (tiny_weights_dir / "tiny_axial_resnet18.safetensors").read_bytes()
    meta = (tiny_weights_dir / "tiny_axial_resnet18.json").read_bytes()
    at.file_uploader(key="own-weights").set_value(("a.safetensors", weights, "application/octet-stream"))
    at.file_uploader(key="own-meta").set_value(("a.json", meta, "application/json")).run()
    at.button(key="own-load").click().run()
    data = _png(200, 100, seed=3)
    at.radio(key="source").set_value("Upload").run()
    at.file_uploader(key="upload").set_value(("wide.png", data, "image/png")).run()
    at.radio(key="view").set_value("Axial").run()  # the view's radio is not drawn while no image is uploaded
    assert not at.exception, at.exception
    click_key = f"axial-click-{image_key(data)[:16]}-{upload_key(weights, meta)}"
    at.session_state[click_key] = {"x": 300, "y": 50, "width": 448, "height": 224, "unix_time": 1}
    at.run()
    assert not at.exception, at.exception
    x, y = original_pixel(300, 50, (448, 224), (200, 100))
    a = attnviz.analyze(data, attnviz.load_pair(tiny_weights_dir / "tiny_axial_resnet18.safetensors")[0])
    layer = "layer2.1.axial"
    row, col = a.cell(layer, x, y)
    text = " ".join(m.value for m in at.markdown)
    assert f"query pixel ({x}, {y}) → cell (row {row}, col {col}) of 8×8" in text
    figs = [json.loads(c.proto.spec) for c in _charts(at)]
    assert len(figs) == 9  # three layers, three maps each
    column, line, composed = (plotly_array(f["data"][0]["z"]).reshape(8, 8) for f in figs[3:6])
    along_column, along_row = a.axial_query(layer, x, y)
    # the height step is drawn down the clicked column only, the width step across its row only
    assert np.isnan(np.delete(column, col, axis=1)).all() and np.isnan(np.delete(line, row, axis=0)).all()
    np.testing.assert_allclose(column[:, col], along_column.mean(0).numpy(), rtol=1e-6)
    np.testing.assert_allclose(line[row], along_row.mean(0).numpy(), rtol=1e-6)
    np.testing.assert_allclose(composed, a.query(layer, x, y).mean(0).numpy(), rtol=1e-5)
    assert (composed > 0).all()  # the composed map covers the whole image
    at.radio(key=f"axial-head-{layer}-{upload_key(weights, meta)}").set_value("head 1").run()
    column = plotly_array(json.loads(_charts(at)[3].proto.spec)["data"][0]["z"]).reshape(8, 8)
    np.testing.assert_allclose(column[:, col], along_column[1].numpy(), rtol=1e-6)
    assert any("through the cell (r, c')" in c.value for c in at.caption)
