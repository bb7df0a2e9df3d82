import pytest
import torch
import torch.nn.functional as F

from attnviz.layers import CBAM, ChannelGate, SelfAttention2d, SpatialGate, SqueezeExcite


def test_se_matches_the_paper_equations():
    torch.manual_seed(0)
    se = SqueezeExcite(64, reduction=16).eval()
    x = torch.randn(2, 64, 5, 7)
    z = x.mean((2, 3))  # squeeze: B, C
    s = torch.sigmoid(F.linear(F.relu(F.linear(z, se.fc1.weight[:, :, 0, 0], se.fc1.bias)),
                               se.fc2.weight[:, :, 0, 0], se.fc2.bias))
    assert se.fc1.out_channels == 4  # C / r
    torch.testing.assert_close(se(x), x * s[:, :, None, None])


def test_se_reduction_is_configurable_and_never_zero():
    assert SqueezeExcite(64, reduction=8).fc1.out_channels == 8
    assert SqueezeExcite(8, reduction=16).fc1.out_channels == 1


def _mlp_of(convs):  # B, C -> B, C: W1 (ReLU) then W0 of two 1x1 convs, recomputed from their weights
    fc1, fc2 = convs
    return lambda z: F.linear(F.relu(F.linear(z, fc1.weight[:, :, 0, 0], fc1.bias)), fc2.weight[:, :, 0, 0], fc2.bias)


def test_cbam_channel_gate_uses_one_shared_mlp_for_avg_and_max():
    torch.manual_seed(0)
    gate = ChannelGate(32, reduction=4).eval()
    x = torch.randn(2, 32, 6, 6)
    convs = [m for m in gate.modules() if isinstance(m, torch.nn.Conv2d)]
    assert len(convs) == 2  # one MLP: two layers, shared by both squeezes
    fc1, fc2 = convs
    assert (fc1.in_channels, fc1.out_channels, fc2.out_channels) == (32, 8, 32)  # C -> C/r -> C
    mlp = _mlp_of(convs)  # the paper's W1 (ReLU) then W0
    expected = torch.sigmoid(mlp(x.mean((2, 3))) + mlp(x.amax((2, 3))))
    torch.testing.assert_close(gate(x), x * expected[:, :, None, None])


def test_unshared_cbam_channel_gate_has_one_mlp_for_avg_and_one_for_max():
    torch.manual_seed(0)
    gate = ChannelGate(32, reduction=4, shared=False).eval()
    x = torch.randn(2, 32, 6, 6)
    assert not hasattr(gate, "mlp")
    avg_convs = [m for m in gate.mlp_avg.modules() if isinstance(m, torch.nn.Conv2d)]
    max_convs = [m for m in gate.mlp_max.modules() if isinstance(m, torch.nn.Conv2d)]
    assert len([m for m in gate.modules() if isinstance(m, torch.nn.Conv2d)]) == 4  # two MLPs, two layers each
    for fc1, fc2 in (avg_convs, max_convs):
        assert (fc1.in_channels, fc1.out_channels, fc2.out_channels) == (32, 8, 32)  # C -> C/r -> C
    avg_mlp, max_mlp = _mlp_of(avg_convs), _mlp_of(max_convs)
    expected = torch.sigmoid(avg_mlp(x.mean((2, 3))) + max_mlp(x.amax((2, 3))))
    torch.testing.assert_close(gate(x), x * expected[:, :, None, None])
    # the two branches are what the sigmoid sums, each from its own MLP; swapping them changes the gate
    avg, mx = gate.branches(x)
    torch.testing.assert_close(avg[:, :, 0, 0], avg_mlp(x.mean((2, 3))))
    torch.testing.assert_close(mx[:, :, 0, 0], max_mlp(x.amax((2, 3))))
    swapped = torch.sigmoid(max_mlp(x.mean((2, 3))) + avg_mlp(x.amax((2, 3))))
    assert not torch.allclose(swapped, expected)


def test_cbam_spatial_gate_pools_over_channels_and_uses_a_7x7_conv():
    torch.manual_seed(0)
    gate = SpatialGate().eval()
    assert gate.conv.kernel_size == (7, 7) and gate.conv.in_channels == 2 and gate.conv.out_channels == 1
    x = torch.randn(2, 16, 9, 11)
    pooled = torch.cat([x.amax(1, keepdim=True), x.mean(1, keepdim=True)], 1)
    expected = torch.sigmoid(gate.bn(F.conv2d(pooled, gate.conv.weight, padding=3)))
    torch.testing.assert_close(gate(x), x * expected)


def test_spatial_gate_kernel_must_be_odd():
    with pytest.raises(ValueError, match="odd"):
        SpatialGate(kernel_size=4)


def test_cbam_is_channel_then_spatial():
    torch.manual_seed(0)
    cbam = CBAM(16, reduction=4, kernel_size=3).eval()
    x = torch.randn(1, 16, 5, 5)
    torch.testing.assert_close(cbam(x), cbam.spatial(cbam.channel(x)))


def _reference_attention(sa, x):
    """softmax(tau * cos(q_i, k_j) - slope * dist(i, j)) recomputed by hand: tokens
    row-major (i = row * W + col), distances from each pair's (row, col)."""
    b, c, h, w = x.shape
    heads, d = sa.num_heads, c // sa.num_heads

    def tokens(t):  # B, C, H, W -> B, heads, N, d, token i = row * w + col
        return torch.stack([t[:, :, i // w, i % w] for i in range(h * w)], dim=1).reshape(b, h * w, heads, d) \
            .transpose(1, 2)

    q, k, v = tokens(sa.q(x)), tokens(sa.k(x)), tokens(sa.v(x))
    cos = F.cosine_similarity(q.unsqueeze(3), k.unsqueeze(2), dim=-1)  # B, heads, N, N
    dist = torch.tensor([[((i // w - j // w) ** 2 + (i % w - j % w) ** 2) ** 0.5 for j in range(h * w)]
                         for i in range(h * w)])
    tau = sa.logit_scale.exp().clamp(max=100)
    logits = tau.view(1, -1, 1, 1) * cos - sa.slope.view(1, -1, 1, 1) * dist
    return logits.softmax(-1), v


@pytest.mark.parametrize("hw", [(4, 4), (7, 5), (1, 9)])
def test_self_attention_equals_a_recomputation_on_row_major_positions(hw):
    torch.manual_seed(0)
    sa = SelfAttention2d(16, num_heads=4).eval()
    torch.nn.init.uniform_(sa.bn.weight, 0.5, 1.5)
    with torch.no_grad():
        sa.logit_scale.copy_(torch.tensor([0.5, 1.0, 2.0, 5.0]))  # the last above the cap of log(100)
        sa.slope.copy_(torch.tensor([0.7, 0.0, -0.2, 0.3]))
    x = torch.randn(2, 16, *hw)
    b, c, h, w = x.shape
    seen = []
    handle = sa.softmax.register_forward_hook(lambda m, i, o: seen.append(o))
    y = sa(x)
    handle.remove()
    attn, v = _reference_attention(sa, x)
    torch.testing.assert_close(seen[0], attn, atol=1e-5, rtol=1e-5)  # the captured matrix, token order included
    out = (attn @ v).transpose(1, 2).reshape(b, h, w, c).permute(0, 3, 1, 2)
    torch.testing.assert_close(y, x + sa.bn(sa.proj(out)), atol=1e-5, rtol=1e-5)


def test_self_attention_position_term_peaks_at_the_query_cell_of_a_non_square_map():
    # With q = k = 0 the content term is 0 for every pair: only -slope * distance is
    # left, so query (r, c) must put its largest weight on cell (r, c) itself.
    sa = SelfAttention2d(8, num_heads=2).eval()
    torch.nn.init.zeros_(sa.q.weight)
    torch.nn.init.zeros_(sa.k.weight)
    seen = []
    handle = sa.softmax.register_forward_hook(lambda m, i, o: seen.append(o))
    sa(torch.randn(1, 8, 3, 7))
    handle.remove()
    attn = seen[0][0]  # heads, 21, 21
    for r, c in [(0, 0), (0, 6), (2, 0), (2, 6), (1, 3)]:
        for head in range(2):
            row = attn[head, r * 7 + c].reshape(3, 7)
            assert divmod(int(row.argmax()), 7) == (r, c)
            # and falls off with distance: the cell one column away beats the one two away
            if c + 2 < 7:
                assert row[r, c + 1] > row[r, c + 2]


def test_self_attention_content_finds_a_marked_cell_of_a_non_square_map():
    # No position term; q = k = the input. One cell of a 3 x 7 map holds a feature
    # orthogonal to all the others: its query looks at itself, every other query looks
    # away from it. The captured rows must say so at that cell, in row-major order.
    sa = SelfAttention2d(8, num_heads=2).eval()
    with torch.no_grad():
        sa.slope.zero_()
        for conv in (sa.q, sa.k):
            conv.weight.copy_(torch.eye(8)[:, :, None, None])
    x = torch.zeros(1, 8, 3, 7)
    x[:, [0, 4]] = 1.0  # every cell: the first channel of each head
    r, c = 2, 5
    x[0, :, r, c] = 0.0
    x[0, [1, 5], r, c] = 1.0  # the marked cell: the second channel of each head
    seen = []
    handle = sa.softmax.register_forward_hook(lambda m, i, o: seen.append(o))
    sa(x)
    handle.remove()
    for head in range(2):
        marked = seen[0][0, head, r * 7 + c].reshape(3, 7)
        assert divmod(int(marked.argmax()), 7) == (r, c)
        other = seen[0][0, head, 0].reshape(3, 7)  # query (0, 0)
        assert divmod(int(other.argmin()), 7) == (r, c)


def test_self_attention_rows_sum_to_one_and_the_matrix_is_a_submodule_output():
    torch.manual_seed(0)
    sa = SelfAttention2d(8, num_heads=4).eval()
    seen = []
    handle = sa.softmax.register_forward_hook(lambda m, i, o: seen.append(o))
    sa(torch.randn(3, 8, 6, 5))
    handle.remove()
    (attn,) = seen
    assert attn.shape == (3, 4, 30, 30)
    torch.testing.assert_close(attn.sum(-1), torch.ones(3, 4, 30))


def test_self_attention_starts_as_identity_and_checks_heads():
    sa = SelfAttention2d(8).eval()
    x = torch.randn(1, 8, 3, 3)
    torch.testing.assert_close(sa(x), x)
    with pytest.raises(ValueError, match="divisible"):
        SelfAttention2d(10, num_heads=4)


def test_the_papers_defaults_and_every_argument_reaches_its_module():
    from torch import nn

    assert SqueezeExcite(64).fc1.out_channels == 4  # r = 16
    assert ChannelGate(64).mlp[0].out_channels == 4
    cbam = CBAM(64)
    assert cbam.channel.mlp[0].out_channels == 4 and cbam.spatial.conv.kernel_size == (7, 7)
    custom = CBAM(64, reduction=8, kernel_size=3, act_layer=nn.GELU, gate_layer=nn.Hardsigmoid)
    assert custom.channel.mlp[0].out_channels == 8 and custom.spatial.conv.kernel_size == (3, 3)
    assert isinstance(custom.channel.mlp[1], nn.GELU)
    assert isinstance(custom.channel.gate, nn.Hardsigmoid) and isinstance(custom.spatial.gate, nn.Hardsigmoid)


def test_self_attention_has_the_parameters_the_shipped_weights_have():
    sa = SelfAttention2d(16, num_heads=4)
    assert sorted(sa.state_dict()) == [
        "bn.bias", "bn.num_batches_tracked", "bn.running_mean", "bn.running_var", "bn.weight", "k.weight",
        "logit_scale", "proj.weight", "q.weight", "slope", "v.weight"]  # no biases on q, k, v, proj
    torch.testing.assert_close(sa.temperature(), torch.full((4,), 10.0))  # Swin V2's start


def test_distance_slopes_run_geometrically_from_one_to_a_quarter():
    from attnviz.layers.self_attention import distance_slopes

    torch.testing.assert_close(distance_slopes(1), torch.tensor([1.0]))
    torch.testing.assert_close(distance_slopes(2), torch.tensor([1.0, 0.25]))
    torch.testing.assert_close(distance_slopes(4), torch.tensor([1.0, 4 ** (-1 / 3), 4 ** (-2 / 3), 0.25]))


def test_position_logits_are_made_for_each_grid_size():
    sa = SelfAttention2d(8, num_heads=2)
    wide, tall = sa.position_logits(2, 3), sa.position_logits(3, 2)
    assert wide.shape == tall.shape == (2, 6, 6)
    assert wide[0, 0, 3] == -1.0 and tall[0, 0, 3] == pytest.approx(-(2**0.5))  # (0,0)->(1,0) vs (0,0)->(1,1)
