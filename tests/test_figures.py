"""Figures are pure functions returning plotly figures: checked here without a browser,
on what a user reads off them (scales, placement over the image, which values)."""

from __future__ import annotations

import re

import numpy as np
import plotly.graph_objects as go
import pytest
import torch
from PIL import Image

from attnviz import figures
from attnviz.image import feature_cell
from attnviz.profile import SEProfile

from .conftest import top5_pairs


def _heatmaps(fig: go.Figure) -> list[go.Heatmap]:
    return [t for t in fig.data if isinstance(t, go.Heatmap)]


def test_gate_bars_keep_the_absolute_scale_and_name_channels_when_sorted():
    g = torch.tensor([0.2, 0.9, 0.05, 0.5])
    fig = figures.gate_bars(g, sort=True)
    assert tuple(fig.layout.yaxis.range) == (0, 1)  # never rescaled to the data
    assert "0..1" in fig.layout.yaxis.title.text
    bar = fig.data[0]
    np.testing.assert_allclose(bar.y, [0.9, 0.5, 0.2, 0.05])
    assert list(bar.customdata) == [1, 3, 0, 2]  # the hover still names each channel
    np.testing.assert_allclose(figures.gate_bars(g).data[0].y, g.numpy())


def test_gates_heatmap_pads_narrow_blocks_and_fixes_the_colour_range():
    gates = {"layer1.0.se.gate": torch.full((4,), 0.25), "layer2.0.se.gate": torch.linspace(0, 1, 8)}
    hm = _heatmaps(figures.gates_heatmap(gates))[0]
    z = np.asarray(hm.z, dtype=float)
    assert z.shape == (2, 8) and (hm.zmin, hm.zmax) == (0, 1)
    np.testing.assert_allclose(z[0, :4], 0.25)
    assert np.isnan(z[0, 4:]).all()
    assert list(hm.y) == ["layer1.0", "layer2.0"]


def _resnet50_gates() -> dict[str, torch.Tensor]:
    """SE gates shaped as a ResNet-50's: 16 blocks of 256 to 2,048 channels."""
    torch.manual_seed(0)
    widths = [256] * 3 + [512] * 4 + [1024] * 6 + [2048] * 3
    return {f"layer{i}.se.gate": torch.rand(c) for i, c in enumerate(widths)}


@pytest.mark.parametrize("sort", [False, True])
def test_2048_gates_are_drawn_as_256_bins_with_their_mean_min_and_max(sort):
    g = _resnet50_gates()["layer15.se.gate"]
    fig = figures.gate_bars(g, sort=sort)
    bar = fig.data[0]
    assert len(bar.y) == figures.MAX_BARS == 256 and tuple(fig.layout.yaxis.range) == (0, 1)
    values = g.sort(descending=True).values if sort else g
    bins = values.numpy().astype(float).reshape(256, 8)
    np.testing.assert_allclose(bar.y, bins.mean(1))
    np.testing.assert_allclose(np.asarray(bar.y) + np.asarray(bar.error_y.array), bins.max(1))
    np.testing.assert_allclose(np.asarray(bar.y) - np.asarray(bar.error_y.arrayminus), bins.min(1))
    assert "2,048 in 256 bins of 8" in fig.layout.xaxis.title.text
    if sort:
        assert (np.diff(bar.y) <= 0).all()
    assert len(fig.to_json()) < 60_000  # a few tens of kB per chart, not one bar per channel


def test_a_resnet50_overview_is_one_column_per_bin_of_the_same_channels_in_every_row():
    gates = _resnet50_gates()
    fig = figures.gates_heatmap(gates)
    hm = _heatmaps(fig)[0]
    z = np.asarray(hm.z, dtype=float)
    assert z.shape == (16, 256) and (hm.zmin, hm.zmax) == (0, 1)
    np.testing.assert_allclose(z[0, :32], gates["layer0.se.gate"].double().numpy().reshape(32, 8).mean(1))  # 32 bins
    assert np.isnan(z[0, 32:]).all()
    np.testing.assert_allclose(z[15], gates["layer15.se.gate"].double().numpy().reshape(256, 8).mean(1))
    custom = np.asarray(hm.customdata, dtype=float)
    np.testing.assert_allclose(custom[15, :, 3], gates["layer15.se.gate"].numpy().reshape(256, 8).max(1))
    assert list(custom[15, 1, :2]) == [8, 15]  # the second column is channels 8..15 in every row
    assert len(fig.to_json()) < 400_000
    small = figures.gates_heatmap({"a": torch.rand(100)})
    assert np.asarray(_heatmaps(small)[0].z).shape == (1, 100)  # up to 256 channels: one column each


@pytest.mark.parametrize("size", [(120, 80), (50, 200)])
def test_overlay_places_each_cell_over_the_pixels_that_map_to_it(size):
    width, height = size
    im = Image.new("RGB", size)
    grid = np.random.default_rng(0).random((7, 5))
    hm = _heatmaps(figures.overlay(im, grid))[0]
    h, w = grid.shape
    # Centre of cell (r, c) in image pixels, as the figure draws it ...
    for r, c in [(0, 0), (6, 4), (3, 2)]:
        cx, cy = hm.x0 + c * hm.dx, hm.y0 + r * hm.dy
        # ... is a pixel that Analysis.cell maps back to (r, c).
        assert feature_cell(cx, cy, (width, height), (h, w)) == (r, c)
    assert (hm.x0 - hm.dx / 2, hm.y0 - hm.dy / 2) == (0, 0)
    assert hm.x0 + (w - 0.5) * hm.dx == pytest.approx(width)
    assert (hm.zmin, hm.zmax) == (0, 1)  # gates: absolute scale by default


def test_query_panel_shows_the_mean_first_then_every_head_on_one_scale():
    rng = np.random.default_rng(1)
    maps = torch.tensor(rng.random((4, 6, 6)), dtype=torch.float32)
    maps = maps / maps.sum((1, 2), keepdim=True)
    fig = figures.query_panel(Image.new("RGB", (90, 60)), maps, (10, 20), "layer2.1.attn.softmax")
    mean, heads = _heatmaps(fig)
    np.testing.assert_allclose(np.asarray(mean.z), maps.mean(0).numpy(), atol=1e-9)
    # Every head, in a 2 x 2 mosaic with one blank row/column between tiles, each cell
    # naming its head.
    z, head = np.asarray(heads.z, dtype=float), np.asarray(heads.customdata)
    assert z.shape == head.shape == (13, 13)
    for i, (r, c) in enumerate([(0, 0), (0, 7), (7, 0), (7, 7)]):
        np.testing.assert_array_equal(z[r : r + 6, c : c + 6], maps[i].numpy())
        assert (head[r : r + 6, c : c + 6] == i).all()
    assert np.isnan(z[6]).all() and np.isnan(z[:, 6]).all() and (head[6] == -1).all()
    assert heads.hoverongaps is False and "head %{customdata}" in heads.hovertemplate
    # Each tile spans the image's 90 x 60 pixels; tiles are a gap apart.
    x, y = np.asarray(heads.x), np.asarray(heads.y)
    assert len(x) == 2 * 7 and len(y) == 2 * 7  # edges: w + 1 per tile
    assert x[0] == 0 and x[6] == pytest.approx(90) and x[13] - x[7] == pytest.approx(90) and x[7] > 90
    assert y[0] == 0 and y[6] == pytest.approx(60) and y[13] - y[7] == pytest.approx(60) and y[7] > 60
    assert (mean.zmin, heads.zmin) == (0, 0)
    assert mean.zmax == heads.zmax == pytest.approx(float(maps.max()))  # heads compare honestly
    assert [mean.showscale, heads.showscale] == [True, False]  # one colour bar, named
    assert "sum to 1" in mean.colorbar.title.text
    # The query pixel (10, 20) is in cell (row 2, col 0) of 6 x 6 over 90 x 60: x 0..15, y 20..30. A
    # cross-hair marks it on the mean and on every tile, its arms ending at the cell's edges.
    mean_hair, _, tiles_hair, _ = [t for t in fig.data if isinstance(t, go.Scatter)]
    segments = [((a, b), (c, d)) for a, b, c, d in zip(mean_hair.x[0::3], mean_hair.y[0::3], mean_hair.x[1::3],
                                                       mean_hair.y[1::3])]
    assert [end for _, end in segments[:1]] + [start for start, _ in segments[1:2]] == [(0.0, 25.0), (15.0, 25.0)]
    assert segments[2][1] == (7.5, 20.0) and segments[3][0] == (7.5, 30.0)
    assert len(tiles_hair.x) == 4 * len(mean_hair.x)  # one per tile
    np.testing.assert_allclose([v for v in tiles_hair.x[12:24] if v is not None], np.array(
        [v for v in mean_hair.x if v is not None]) + x[7])  # the second tile's, a tile to the right
    assert len(fig.layout.images) == 2  # the photo under the mean, and its mosaic under the heads
    assert [a.text for a in fig.layout.annotations] == ["mean of 4 heads", "head 0", "head 1", "head 2", "head 3"]


def test_a_map_can_be_drawn_on_a_log_scale_with_only_the_cells_that_hold_most_of_its_attention():
    np.testing.assert_allclose(figures.scaled(np.array([0.8, 0.08, 0.008, 0.0008, 0.0]), 0.8, "log"),
                               [1, 2 / 3, 1 / 3, 0, 0], atol=1e-12)
    np.testing.assert_allclose(figures.scaled(np.array([0.2, 0.8]), 0.8, "sqrt"), [0.5, 1])
    row = np.array([[0.05, 0.5], [0.3, 0.15]])
    assert figures.held(row, 0.7).tolist() == [[False, True], [True, False]]  # 0.5 + 0.3 hold 70 %
    assert figures.held(row, 0.5).tolist() == [[False, True], [False, False]] and figures.held(row, 1.0).all()
    maps = torch.tensor([[[0.05, 0.5], [0.3, 0.15]], [[0.25, 0.25], [0.25, 0.25]]])
    fig = figures.query_panel(Image.new("RGB", (40, 40)), maps, (0.0, 0.0), "layer3.1.attn.softmax", zmax=0.8,
                              scale="log", mass=0.7)
    dim, mean = (t for t in fig.data if isinstance(t, go.Heatmap) and t.xaxis in (None, "x"))
    kept = figures.held(maps.mean(0).numpy(), 0.7)
    z = np.asarray(mean.z, dtype=float)
    assert np.isnan(z[~kept]).all() and np.isnan(np.asarray(dim.z, dtype=float)[kept]).all()
    np.testing.assert_allclose(z[kept], figures.scaled(maps.mean(0).numpy()[kept], 0.8, "log") * 0.8, rtol=1e-6)
    assert mean.zmax == 0.8
    np.testing.assert_allclose(np.asarray(mean.customdata), maps.mean(0).numpy())  # the weights themselves
    assert dim.opacity == 0.6 and dim.showscale is False


def test_query_panel_with_an_odd_number_of_heads_leaves_the_last_tile_blank():
    maps = torch.full((3, 2, 2), 0.25)
    fig = figures.query_panel(Image.new("RGB", (40, 40)), maps, (0.0, 0.0), "layer3.1.attn.softmax")
    z = np.asarray(_heatmaps(fig)[1].z, dtype=float)
    assert z.shape == (5, 5) and np.isnan(z[3:, 3:]).all() and (z[:2, :2] == 0.25).all()
    single = figures.query_panel(Image.new("RGB", (40, 40)), maps[:1], (0.0, 0.0), "layer3.1.attn.softmax")
    assert np.asarray(_heatmaps(single)[1].z).shape == (2, 2)


def test_top_k_bars_best_on_top_in_probability_units():
    fig = figures.top_k_bars([("church", 0.7), ("tench", 0.2), ("parachute", 0.1)])
    bar = fig.data[0]
    assert list(bar.y) == ["parachute", "tench", "church"]  # plotly draws the last bar on top
    assert tuple(fig.layout.xaxis.range) == (0, 1)


def test_top_k_html_carries_the_exact_pairs_best_first_and_escapes_class_names():
    top = [("church <b>", 0.7123456789), ("tench's", 0.2), ("parachute", 0.0876543211)]
    text = figures.top_k_html(top)
    assert top5_pairs(text) == top  # whole: no name cuts the attribute short
    assert "<b>" not in text and "church &lt;b&gt;" in text
    assert [float(w) for w in re.findall(r"width:([0-9.]+)%", text)] == [71.23, 20.0, 8.77]  # bars on 0..100 %
    assert "71.2%" in text and "8.8%" in text


def test_profile_figures_draw_each_class_and_this_image():
    prof = SEProfile(model="se", classes=["a", "b"], images=10,
                     means={"layer1.0.se.gate": [[0.1, 0.2], [0.3, 0.4]],
                            "layer4.1.se.gate": [[0.5, 0.6], [0.7, 0.8]]},
                     specificity={"layer1.0.se.gate": 0.01, "layer4.1.se.gate": 0.6})
    fig = figures.profile_curves(prof, "layer4.1.se.gate", torch.tensor([0.9, 0.1]))
    assert [t.name for t in fig.data] == ["a", "b", "this image"]
    # each class and this image as its deviation from the mean over the classes (0.6, 0.7)
    np.testing.assert_allclose([fig.data[0].y, fig.data[1].y, fig.data[2].y], [[-0.1, -0.1], [0.1, 0.1], [0.3, -0.6]])
    assert tuple(fig.layout.yaxis.range) == pytest.approx((-0.63, 0.63)) and "0.60" in fig.layout.title.text
    depth = figures.specificity_by_depth(prof, "layer4.1.se.gate")
    assert list(depth.data[0].x) == ["layer1.0", "layer4.1"] and list(depth.data[0].y) == [0.01, 0.6]
    assert tuple(depth.layout.yaxis.range) == (0, 1)
    grid = figures.profile_grid(prof)
    assert len(grid.data) == 2 * 2 and sum(t.showlegend for t in grid.data) == 2


def test_a_display_copy_is_drawn_in_the_original_image_coordinates():
    shown = Image.new("RGB", (60, 40))  # a display copy of a 3000 x 2000 photo
    fig = figures.overlay(shown, np.zeros((4, 6)), query=(2999, 10), extent=(3000, 2000))
    hm = _heatmaps(fig)[0]
    assert (hm.dx, hm.dy) == (500, 500)
    assert tuple(fig.layout.xaxis.range) == (0, 3000) and fig.layout.images[0].sizex == 3000
    assert (fig.data[1].x[0], fig.data[1].y[0]) == (2999.5, 10.5)  # the centre of pixel (2999, 10)
    mean = figures.query_mean(shown, torch.ones(2, 4, 6) / 24, (5.0, 5.0), "layer3.1.attn.softmax",
                              extent=(3000, 2000))
    np.testing.assert_allclose(np.asarray(_heatmaps(mean)[0].z), 1 / 24)
    assert "mean of 2 heads" in mean.layout.title.text


def test_before_after_bars_pair_each_class_on_the_probability_scale():
    classes = ["a", "b", "c", "d", "e", "f", "g"]
    before = torch.tensor([0.50, 0.20, 0.10, 0.08, 0.06, 0.04, 0.02])
    after = torch.tensor([0.05, 0.10, 0.05, 0.05, 0.05, 0.10, 0.60])
    fig = figures.before_after_bars(classes, before, after, target=0, k=5)
    now, was = fig.data  # in a horizontal group the first trace is drawn lowest
    assert (was.name, now.name) == ("before", "after") and fig.layout.barmode == "group"
    assert tuple(fig.layout.xaxis.range) == (0, 1)  # never rescaled to the data
    # exactly 5: the followed class and the most probable before or after (g and f join, d and e make way),
    # ordered by before, the largest on top
    assert list(was.y) == list(now.y) == ["g", "f", "c", "b", "<b>a</b>"]
    np.testing.assert_allclose(was.x, before.numpy()[[6, 5, 2, 1, 0]])
    np.testing.assert_allclose(now.x, after.numpy()[[6, 5, 2, 1, 0]])


def test_channel_maps_share_one_symmetric_scale_so_a_gate_shows_as_a_fainter_map():
    im = Image.new("RGB", (120, 80))
    before = torch.tensor([[-2.0, 1.0], [0.5, 3.0]])
    fig = figures.channel_maps(im, {"before": before, "after": before * 0.25}, extent=(120, 80))
    hms = _heatmaps(fig)
    assert len(hms) == 2 and len(fig.layout.images) == 2
    assert all((hm.zmin, hm.zmax) == (-3.0, 3.0) for hm in hms)  # signed values, one scale
    np.testing.assert_allclose(np.asarray(hms[1].z, dtype=float), before.numpy() * 0.25)
    assert [hms[0].showscale, hms[1].showscale] == [True, False]
    assert [a.text for a in fig.layout.annotations] == ["before", "after"]
    assert hms[0].xaxis == "x" and hms[1].xaxis == "x2"


def test_channel_thumbnails_put_each_map_in_its_tile_with_its_label():
    im = Image.new("RGB", (60, 40))
    maps = torch.arange(6 * 2 * 3, dtype=torch.float32).reshape(6, 2, 3) - 10
    fig = figures.channel_thumbnails(im, maps, [f"ch {i}" for i in range(6)], rows=2, extent=(60, 40))
    hm = _heatmaps(fig)[0]
    z, tile = np.asarray(hm.z, dtype=float), np.asarray(hm.customdata)
    for i in range(6):  # 2 rows of 3 tiles, a blank line between tiles
        np.testing.assert_allclose(z[tile == i].reshape(2, 3), maps[i].numpy())
    assert np.isnan(z[tile == -1]).all()
    assert (hm.zmin, hm.zmax) == (-25.0, 25.0)
    assert [a.text for a in fig.layout.annotations] == [f"ch {i}" for i in range(6)]
    with pytest.raises(ValueError, match="6 maps but 5 labels"):
        figures.channel_thumbnails(im, maps, ["x"] * 5)


def test_a_clickable_overview_carries_block_channel_and_gate_on_every_cell():
    gates = {"layer1.0.se.gate": torch.tensor([0.1, 0.2]), "layer2.0.se.gate": torch.tensor([0.3, 0.4, 0.5])}
    fig = figures.gates_heatmap(gates, clickable=True)
    hm, cells = fig.data
    assert hm.hoverinfo == "skip" and cells.mode == "markers"  # one hover label: the cell's
    assert [list(c) for c in cells.customdata] == [
        ["layer1.0.se.gate", 0, pytest.approx(0.1)], ["layer1.0.se.gate", 1, pytest.approx(0.2)],
        ["layer2.0.se.gate", 0, pytest.approx(0.3)], ["layer2.0.se.gate", 1, pytest.approx(0.4)],
        ["layer2.0.se.gate", 2, pytest.approx(0.5)]]
    assert list(cells.x) == [0, 1, 0, 1, 2] and list(cells.y) == ["layer1.0"] * 2 + ["layer2.0"] * 3
    assert len(figures.gates_heatmap(gates).data) == 1  # not clickable: the heatmap alone
