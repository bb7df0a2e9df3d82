"""Axial attention (attnviz.layers.axial): each step recomputed by loops from the module's
weights, the layer's output from the captured steps, and the composed map by brute force."""

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from attnviz.layers.axial import AxialAttention2d, compose


def _step_by_loops(step, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(weights, output) of one AxialStep, one line and one head at a time, from its
    convolution weights: weights (B, heads, lines, n, n), output (B, C, H, W)."""
    b, c, h, w = x.shape
    d = step.head_dim
    q, k, v = step.q(x), step.k(x), step.v(x)
    tau = step.logit_scale.clamp(max=math.log(100.0)).exp()
    lines, n = (w, h) if step.axis == "height" else (h, w)
    weights = torch.zeros(b, step.num_heads, lines, n, n)
    out = torch.zeros_like(x)
    for bi in range(b):
        for head in range(step.num_heads):
            ch = slice(head * d, (head + 1) * d)
            for line in range(lines):
                def cells(t, line=line, ch=ch, bi=bi):  # n, d: the line's cells of this head
                    return t[bi, ch, :, line].T if step.axis == "height" else t[bi, ch, line, :].T

                qn, kn = F.normalize(cells(q), dim=-1), F.normalize(cells(k), dim=-1)
                logits = tau[head] * qn @ kn.T
                for i in range(n):
                    for j in range(n):
                        logits[i, j] -= step.slope[head] * abs(i - j)
                a = logits.softmax(-1)
                weights[bi, head, line] = a
                if step.axis == "height":
                    out[bi, ch, :, line] = (a @ cells(v)).T
                else:
                    out[bi, ch, line, :] = (a @ cells(v)).T
    return weights, out


def _layer(c: int = 8, heads: int = 2, seed: int = 0) -> AxialAttention2d:
    torch.manual_seed(seed)
    layer = AxialAttention2d(c, num_heads=heads).eval()
    torch.nn.init.uniform_(layer.bn.weight, 0.5, 1.5)
    with torch.no_grad():
        layer.height.logit_scale.copy_(torch.tensor([0.5, 5.0]))  # the second above the cap of log(100)
        layer.width.logit_scale.copy_(torch.tensor([1.5, 2.0]))
    return layer


def _run(layer: AxialAttention2d, x: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    seen = {}
    handles = [getattr(layer, axis).softmax.register_forward_hook(lambda m, i, o, a=axis: seen.__setitem__(a, o))
               for axis in ("height", "width")]
    try:
        y = layer(x)
    finally:
        for h in handles:
            h.remove()
    return y, seen


@pytest.mark.parametrize("hw", [(3, 5), (6, 2)])
def test_each_step_equals_a_recomputation_by_loops_on_a_non_square_map(hw):
    layer = _layer()
    x = torch.randn(2, 8, *hw)
    with torch.no_grad():
        y, seen = _run(layer, x)
        h_weights, h_out = _step_by_loops(layer.height, x)
        w_weights, w_out = _step_by_loops(layer.width, h_out)  # the width step reads the height step's output
    h, w = hw
    assert seen["height"].shape == (2, 2, w, h, h) and seen["width"].shape == (2, 2, h, w, w)
    torch.testing.assert_close(seen["height"], h_weights, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(seen["width"], w_weights, atol=1e-5, rtol=1e-5)
    for t in seen.values():
        torch.testing.assert_close(t.sum(-1), torch.ones(t.shape[:-1]))
    torch.testing.assert_close(y, x + layer.bn(layer.proj(w_out)), atol=1e-5, rtol=1e-5)


def test_the_output_is_the_composed_map_applied_to_the_height_steps_values():
    # Head h of the layer is M_h @ (head h of the height step's values), then the width
    # step's per-head value matrix: the composed map is what the layer computes.
    layer = _layer(c=8, heads=2)
    x = torch.randn(1, 8, 4, 3)
    b, c, h, w = x.shape
    with torch.no_grad():
        y, seen = _run(layer, x)
        m = compose(seen["height"], seen["width"])[0]  # heads, N, N
        v = layer.height.v(x)[0].reshape(2, 4, h * w).transpose(1, 2)  # heads, N, d (row-major tokens)
        mixed = (m @ v).transpose(1, 2).reshape(1, c, h, w)  # B, C, H, W
        out = F.conv2d(mixed, layer.width.v.weight, groups=2)
        torch.testing.assert_close(y, x + layer.bn(layer.proj(out)), atol=1e-5, rtol=1e-5)


def test_composed_map_equals_a_brute_force_composition_and_reaches_everywhere():
    torch.manual_seed(1)
    heads, h, w = 2, 3, 4
    height = torch.rand(heads, w, h, h).softmax(-1)  # per column c': A_height[c'](r, r')
    width = torch.rand(heads, h, w, w).softmax(-1)  # per row r: A_width[r](c, c')
    m = compose(height, width)
    brute = torch.zeros(heads, h * w, h * w)
    for head in range(heads):
        for r in range(h):
            for c in range(w):
                for r2 in range(h):
                    for c2 in range(w):
                        # query (r, c) reads (r, c2) in the width step, which read (r2, c2) in the height step
                        brute[head, r * w + c, r2 * w + c2] = width[head, r, c, c2] * height[head, c2, r, r2]
    torch.testing.assert_close(m, brute)
    torch.testing.assert_close(m.sum(-1), torch.ones(heads, h * w))
    assert (m > 0).all()  # every position reaches every other after both steps
    # a leading batch dimension composes image by image
    batch = compose(height[None].expand(2, -1, -1, -1, -1), width[None].expand(2, -1, -1, -1, -1))
    torch.testing.assert_close(batch, m[None].expand(2, -1, -1, -1))


def test_the_captured_layer_composes_to_positive_rows_summing_to_one():
    torch.manual_seed(0)
    layer = AxialAttention2d(8, num_heads=2).eval()  # temperature 10: no weight rounds to 0 in float32
    with torch.no_grad():
        _, seen = _run(layer, torch.randn(1, 8, 5, 3))
    m = compose(seen["height"], seen["width"])
    assert m.shape == (1, 2, 15, 15) and (m > 0).all()
    torch.testing.assert_close(m.sum(-1), torch.ones(1, 2, 15))


def test_compose_refuses_steps_of_different_layers():
    with pytest.raises(ValueError, match="not the two steps"):
        compose(torch.rand(2, 4, 3, 3), torch.rand(2, 3, 5, 5))


def test_axial_attention_starts_as_identity_and_checks_heads():
    layer = AxialAttention2d(16, num_heads=4).eval()
    x = torch.randn(1, 16, 5, 7)
    torch.testing.assert_close(layer(x), x)
    with pytest.raises(ValueError, match="divisible"):
        AxialAttention2d(10, num_heads=4)
    # the width step's values are per head (grouped), the height step's read every channel
    assert layer.width.v.groups == 4 and layer.height.v.groups == 1


def test_each_step_is_query_dependent_through_its_distance_term():
    # q = k = 0: only -slope |i - j| is left, so each query's row peaks at its own cell.
    layer = AxialAttention2d(8, num_heads=2).eval()
    for step in (layer.height, layer.width):
        torch.nn.init.zeros_(step.q.weight)
        torch.nn.init.zeros_(step.k.weight)
    with torch.no_grad():
        _, seen = _run(layer, torch.randn(1, 8, 4, 6))
    for t, n in ((seen["height"], 4), (seen["width"], 6)):
        assert (t[0].argmax(-1) == torch.arange(n)).all()


# --- axial_resnet18: placement, capture, analysis, quality ---------------------------------

AXIAL_LAYERS = ["layer1.1.axial", "layer2.1.axial", "layer3.1.axial"]


def test_axial_resnet18_places_axial_attention_at_strides_4_8_and_16():
    from attnviz.capture import attention_modules, capture
    from attnviz.models import SHIPPED, attention_heads, build_model

    model = build_model("axial_resnet18", width=8).eval()
    found = attention_modules(model)
    assert found == {f"{layer}.{axis}.softmax": f"axial_{axis}" for layer in AXIAL_LAYERS
                     for axis in ("height", "width")}
    assert attention_heads(model) == {"layer1.1.axial": 1, "layer2.1.axial": 2, "layer3.1.axial": 4}
    assert "axial_resnet18" in SHIPPED
    with torch.inference_mode(), capture(model) as maps:
        model(torch.randn(1, 3, 224, 224))
    shapes = {k: tuple(v.shape) for k, v in maps.items()}
    grids = {"layer1.1.axial": (1, 56), "layer2.1.axial": (2, 28), "layer3.1.axial": (4, 14)}  # heads, side
    assert shapes == {f"{layer}.{axis}.softmax": (1, heads, n, n, n) for layer, (heads, n) in grids.items()
                      for axis in ("height", "width")}
    for layer in (model.layer1[1], model.layer2[1], model.layer3[1]):
        assert (layer.axial.bn.weight == 0).all()  # zero-init survives the model's weight init


@pytest.fixture
def axial_model(tiny_env):
    import attnviz

    return attnviz.load_model("tiny_axial_resnet18")


def test_the_analysis_holds_each_layers_composed_map_and_its_steps(axial_model):
    import attnviz

    from .conftest import noise_image

    a = attnviz.analyze(noise_image(120, 72), axial_model, size=96)  # grids 24, 12, 6
    assert list(a.self_attn) == AXIAL_LAYERS
    assert a.self_attn_grid == {"layer1.1.axial": (24, 24), "layer2.1.axial": (12, 12), "layer3.1.axial": (6, 6)}
    for layer, heads in zip(AXIAL_LAYERS, (1, 2, 4)):
        height, width = a.axial_steps(layer)
        hh, ww = a.axial_height[height], a.axial_width[width]
        n = a.self_attn_grid[layer][0]
        assert hh.shape == ww.shape == (heads, n, n, n)
        m = a.self_attn[layer]
        assert m.shape == (heads, n * n, n * n)
        torch.testing.assert_close(m, compose(hh, ww))
        torch.testing.assert_close(m.sum(-1), torch.ones(heads, n * n))
        for t in (hh, ww):
            torch.testing.assert_close(t.sum(-1), torch.ones(t.shape[:-1]))
    with pytest.raises(KeyError, match="not an axial"):
        a.axial_steps("layer4.1.axial")
    # the export carries the steps beside the composed maps, under their kinds
    from attnviz.export import summary, tensors

    arrays = tensors(a)
    assert arrays["axial_height/layer2.1.axial.height.softmax"].shape == (2, 12, 12, 12)
    assert arrays["self_attn/layer2.1.axial"].shape == (2, 144, 144)
    assert set(summary(a)["self_attn_quality"]) == {*AXIAL_LAYERS, *a.axial_height, *a.axial_width}


def test_a_clicked_pixel_of_a_non_square_image_reads_its_row_and_its_column(axial_model):
    import attnviz

    from .conftest import noise_image

    # 160 x 48 image at a 64 px input: layer2 is 8 x 8, a cell 20 px wide and 6 px high.
    a = attnviz.analyze(noise_image(160, 48), axial_model)
    layer = "layer2.1.axial"
    height, width = a.axial_steps(layer)
    for x, y, row, col in [(0, 0, 0, 0), (19, 5, 0, 0), (20, 0, 0, 1), (0, 6, 1, 0), (159, 47, 7, 7), (105, 13, 2, 5)]:
        assert a.cell(layer, x, y) == (row, col)
        along_column, along_row = a.axial_query(layer, x, y)
        assert along_column.shape == along_row.shape == (2, 8)
        # the height step's line is the cell's column, indexed by the query's row; the width step's its row
        torch.testing.assert_close(along_column, a.axial_height[height][:, col, row])
        torch.testing.assert_close(along_row, a.axial_width[width][:, row, col])
        reach = a.query(layer, x, y)  # heads, H, W: the composed map of the clicked cell
        for r2 in range(8):
            for c2 in range(8):
                torch.testing.assert_close(reach[:, r2, c2],
                                           along_row[:, c2] * a.axial_height[height][:, c2, row, r2])


def test_the_composed_map_is_refused_in_one_line_where_it_would_not_fit(axial_model):
    import attnviz
    from attnviz.limits import MAX_COMPOSED_MB

    from .conftest import noise_image

    # 512 px: layer1 is 128 x 128, its composed map 1 GB
    assert 128**4 * 4 / 2**20 > MAX_COMPOSED_MB
    with pytest.raises(ValueError, match="composed axial map of a 128x128 grid"):
        attnviz.analyze(noise_image(64, 64), axial_model, size=512)


def test_quality_figures_cover_each_step_and_the_composed_map():
    from attnviz.attention_quality import head_quality, step_rows
    from attnviz.attention_stats import measure, measure_batches
    from attnviz.image import squash, to_uint8_tensor
    from attnviz.weights import IMAGENET_MEAN, IMAGENET_STD

    from .conftest import TINY_SIZE, noise_image, tiny_model

    model = tiny_model("axial_resnet18")
    images = [noise_image(64 + 8 * i, 48, seed=i) for i in range(3)]
    one_by_one = measure(images, model, size=TINY_SIZE).result()
    steps = [f"{layer}.{axis}.softmax" for layer in AXIAL_LAYERS for axis in ("height", "width")]
    assert set(one_by_one) == {*AXIAL_LAYERS, *steps}
    decoded = torch.stack([to_uint8_tensor(squash(im, TINY_SIZE)) for im in images])
    batched = measure_batches(model, decoded, IMAGENET_MEAN, IMAGENET_STD, batch_size=2).result()
    assert set(batched) == set(one_by_one)
    for layer, heads in one_by_one.items():
        for q1, q2 in zip(heads, batched[layer]):
            assert q1.to_json() == pytest.approx(q2.to_json(), abs=1e-5)
            assert 0 <= q1.entropy <= 1 and 0 <= q1.query_dependence <= 2 and q1.image_dependence is not None
    # a step's rows: every cell's row along its line, n keys each
    import attnviz

    a = attnviz.analyze(images[0], model, size=TINY_SIZE)
    hh = a.axial_height["layer2.1.axial.height.softmax"]
    assert step_rows(hh).shape == (2, 64, 8)
    assert [q.to_json() for q in a.quality["layer2.1.axial.height.softmax"]] == \
        [q.to_json() for q in head_quality(step_rows(hh))]


def test_the_line_maps_of_a_query_cell_on_a_non_square_grid():
    from attnviz.figures import axial_line_maps, axial_panels

    from .conftest import noise_image

    torch.manual_seed(0)
    height = torch.rand(2, 5, 3, 3).softmax(-1)  # heads 2, a 3 x 5 grid: per column, over 3 rows
    width = torch.rand(2, 3, 5, 5).softmax(-1)
    row, col = 2, 4
    column_map, row_map = axial_line_maps(height[:, col, row], width[:, row, col], (row, col))
    assert column_map.shape == row_map.shape == (2, 3, 5)
    np.testing.assert_allclose(column_map[:, :, col], height[:, col, row].numpy())
    np.testing.assert_allclose(row_map[:, row, :], width[:, row, col].numpy())
    assert np.isnan(column_map).sum() == 2 * 3 * 4 and np.isnan(row_map).sum() == 2 * 2 * 5
    composed = compose(height, width)[:, row * 5 + col].reshape(2, 3, 5)
    figs = axial_panels(noise_image(50, 30), height[:, col, row], width[:, row, col], composed, (45, 25), (row, col),
                        "layer2.1.axial", head=1)
    zs = [np.asarray(f.data[0].z, dtype=float) for f in figs]
    np.testing.assert_allclose(zs[0][:, col], height[1, col, row].numpy(), rtol=1e-6)
    np.testing.assert_allclose(zs[2], composed[1].numpy(), rtol=1e-6)
    assert [f.layout.title.text.split("<br>")[1] for f in figs] == \
        ["height step: column 4", "width step: row 2", "composed: both steps"]
