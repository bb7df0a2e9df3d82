"""Axial attention (attnviz.layers.axial): each step recomputed by loops from the module's
weights, the layer's output from the captured steps, and the composed map by brute force."""

import math

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
