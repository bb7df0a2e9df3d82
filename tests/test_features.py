"""The channel drill-down's capture: one block's feature maps before and after its
gates, checked against a recomputation by hand that uses no hook."""

from __future__ import annotations

import threading

import pytest
import torch

import attnviz
from attnviz.analysis import model_input
from attnviz.features import _tap, block_features, find_module, gated_modules

from .conftest import noise_image, tiny_model

IMAGE = noise_image(90, 70, seed=3)


def _hook_count(model: torch.nn.Module) -> int:
    return sum(len(m._forward_hooks) + len(m._forward_pre_hooks) for m in model.modules())


def _branch(model: torch.nn.Module, x: torch.Tensor, block: str) -> tuple[torch.nn.Module, torch.Tensor]:
    """(the block, the tensor its attention module receives), by running the layers
    one by one: the residual branch up to its second BatchNorm."""
    h = model.maxpool(model.relu(model.bn1(model.conv1(x))))
    for stage in ("layer1", "layer2", "layer3", "layer4"):
        for i, blk in enumerate(getattr(model, stage)):
            if f"{stage}.{i}" == block:
                return blk, blk.bn2(blk.conv2(blk.relu(blk.bn1(blk.conv1(h)))))
            h = blk(h)
    raise AssertionError(block)


@pytest.mark.parametrize("block", ["layer1.0", "layer2.1", "layer4.1"])
def test_se_maps_match_a_recomputation_and_after_is_before_times_the_gate(block):
    model = tiny_model("se_resnet18")
    state = {k: v.clone() for k, v in model.state_dict().items()}
    f = block_features(IMAGE, model, block)
    x = model_input(IMAGE, model)[-1]
    with torch.inference_mode():
        blk, u = _branch(model, x, block)
        se = blk.se
        gates = torch.sigmoid(se.fc2(se.act(se.fc1(u.mean((2, 3), keepdim=True)))))[0, :, 0, 0]
    assert f.module == f"{block}.se" and f.kind == "se" and f.block == block and f.spatial is None
    torch.testing.assert_close(f.before, u[0], rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(f.gates, gates, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(f.after_channel, f.before * f.gates[:, None, None], rtol=1e-6, atol=1e-6)
    assert f.after is f.after_channel
    assert f.before.min() < 0 < f.before.max()  # signed: the figures' scale must be too
    # the same gates the app's overview shows for this image
    torch.testing.assert_close(f.gates, attnviz.analyze(IMAGE, model).se[f"{block}.se.gate"])
    assert _hook_count(model) == 0
    assert all(torch.equal(v, state[k]) for k, v in model.state_dict().items())


def test_cbam_maps_go_through_the_channel_gate_then_the_spatial_gate():
    model = tiny_model("cbam_resnet18")
    f = block_features(IMAGE, model, "layer3.0.cbam.channel.gate")  # a path under the block works too
    x = model_input(IMAGE, model)[-1]
    with torch.inference_mode():
        blk, u = _branch(model, x, "layer3.0")
        ch, sp = blk.cbam.channel, blk.cbam.spatial
        pooled = torch.cat((u.mean((2, 3), keepdim=True), u.amax((2, 3), keepdim=True)))
        gates = torch.sigmoid(ch.mlp(pooled).sum(0, keepdim=True))[0, :, 0, 0]
        v = u * gates[None, :, None, None]
        spatial = torch.sigmoid(sp.bn(sp.conv(torch.cat((v.amax(1, keepdim=True), v.mean(1, keepdim=True)), 1))))
    assert (f.module, f.kind) == ("layer3.0.cbam", "cbam")
    torch.testing.assert_close(f.before, u[0], rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(f.gates, gates, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(f.after_channel, f.before * f.gates[:, None, None], rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(f.spatial, spatial[0, 0], rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(f.after, f.after_channel * f.spatial, rtol=1e-6, atol=1e-6)
    assert _hook_count(model) == 0


def test_rank_and_extremes_order_channels_by_gate():
    model = tiny_model("se_resnet18")
    f = block_features(IMAGE, model, "layer2.0")
    g = f.gates
    top, bottom = f.extremes(3)
    assert g[top].tolist() == sorted(g.tolist(), reverse=True)[:3]
    assert g[bottom].tolist() == sorted(g.tolist())[:3]
    for c in range(len(g)):  # rank 1 = largest gate; rank r has r - 1 larger gates
        assert f.rank(c) == 1 + int((g > g[c]).sum())
    assert f.rank(top[0]) == 1 and f.rank(bottom[0]) == len(g)
    assert len(f.extremes(100)[0]) == len(g)


def test_a_wrong_block_is_one_line_naming_the_blocks_there_are():
    model = tiny_model("se_resnet18")
    with pytest.raises(KeyError, match="layer1.0, layer1.1"):
        block_features(IMAGE, model, "layer9.9")
    with pytest.raises(KeyError, match="blocks with channel gates: none"):
        find_module(tiny_model("sa_resnet18"), "layer2.1")
    assert find_module(model, "layer1.1") == find_module(model, "layer1.1.se") == "layer1.1.se"
    assert find_module(model, "layer1.1.se.gate") == "layer1.1.se"
    with pytest.raises(KeyError):
        find_module(model, "layer1")  # a stage, not a block
    assert list(gated_modules(tiny_model("cbam_resnet18")).values()) == ["cbam"] * 8


def test_hooks_are_removed_when_the_forward_pass_raises_and_other_threads_are_not_recorded():
    model = tiny_model("se_resnet18")

    def boom(module, inputs, output):
        raise RuntimeError("boom")

    handle = model.fc.register_forward_hook(boom)
    try:
        with pytest.raises(RuntimeError, match="boom"):
            block_features(IMAGE, model, "layer1.0")
        assert _hook_count(model) == 1  # only the test's own
    finally:
        handle.remove()

    x = model_input(IMAGE, model)[-1]
    with torch.inference_mode(), _tap({"se": model.get_submodule("layer1.0.se")}) as seen:
        other = threading.Thread(target=model, args=(x,))
        other.start()
        other.join()
        assert seen == {}  # another session's forward pass on the shared model
        model(x)
        assert set(seen) == {"se"}
    assert _hook_count(model) == 0
