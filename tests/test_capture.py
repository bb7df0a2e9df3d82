import threading

import pytest
import torch

import attnviz
from attnviz.capture import attention_modules, capture

from .conftest import noise_image, tiny_model


def _hook_count(model):
    return sum(len(m._forward_hooks) + len(m._forward_pre_hooks) for m in model.modules())


def test_se_block_output_is_its_input_times_the_captured_gate():
    model = tiny_model("se_resnet18")
    for path in [p[: -len(".gate")] for p in attention_modules(model)]:
        io = {}
        h = model.get_submodule(path).register_forward_hook(lambda m, i, o: io.update(x=i[0], y=o))
        with torch.inference_mode(), capture(model) as maps:
            model(torch.randn(2, 3, 64, 64))
        h.remove()
        torch.testing.assert_close(io["y"], io["x"] * maps[f"{path}.gate"])


def test_cbam_block_output_is_input_times_channel_gate_times_spatial_gate():
    model = tiny_model("cbam_resnet18")
    for block in ["layer1.0", "layer2.1", "layer4.0"]:
        io = {}
        h = model.get_submodule(f"{block}.cbam").register_forward_hook(lambda m, i, o: io.update(x=i[0], y=o))
        with torch.inference_mode(), capture(model) as maps:
            model(torch.randn(2, 3, 64, 64))
        h.remove()
        gc, gs = maps[f"{block}.cbam.channel.gate"], maps[f"{block}.cbam.spatial.gate"]
        assert gc.shape[2:] == (1, 1) and gs.shape[1] == 1
        assert 0 <= gc.min() and gc.max() <= 1 and 0 <= gs.min() and gs.max() <= 1
        torch.testing.assert_close(io["y"], io["x"] * gc * gs)


def test_attention_rows_sum_to_one():
    model = tiny_model("sa_resnet18")
    with torch.inference_mode(), capture(model) as maps:
        model(torch.randn(2, 3, 64, 48))
    assert set(maps) == {"layer2.1.attn.softmax", "layer3.1.attn.softmax"}
    for t in maps.values():
        torch.testing.assert_close(t.sum(-1), torch.ones(t.shape[:-1]))


def test_no_hook_is_left_also_after_an_exception():
    model = tiny_model("cbam_resnet18")
    before = _hook_count(model)
    with capture(model):
        assert _hook_count(model) == before + 16
        model(torch.randn(1, 3, 32, 32))
    assert _hook_count(model) == before
    with pytest.raises(RuntimeError, match="boom"):
        with capture(model):
            raise RuntimeError("boom")
    assert _hook_count(model) == before


def test_capture_does_not_mutate_the_model():
    model = tiny_model("se_resnet18").train()
    state = {k: v.clone() for k, v in model.state_dict().items()}
    with torch.no_grad(), capture(model):
        model.eval()
        model(torch.randn(1, 3, 32, 32))
        model.train()
    assert model.training
    assert all(torch.equal(state[k], v) for k, v in model.state_dict().items())
    assert not hasattr(model, "maps")


def test_captured_tensors_are_detached_clones():
    model = tiny_model("se_resnet18")
    x = torch.randn(1, 3, 32, 32, requires_grad=True)
    with capture(model, ["layer1.0.se.gate"]) as maps:
        model(x)
    g = maps["layer1.0.se.gate"]
    assert not g.requires_grad and g.grad_fn is None
    kept = g.clone()
    model.layer1[0].se.fc2.bias.data += 100  # later changes must not reach what was captured
    assert torch.equal(maps["layer1.0.se.gate"], kept)


def test_a_wrong_name_lists_the_attention_outputs():
    with pytest.raises(KeyError, match="layer1.0.se.gate"):
        capture(tiny_model("se_resnet18"), ["layer1.0.se.sigmoid"])


def test_two_forward_passes_concatenate_along_the_batch():
    model = tiny_model("se_resnet18")
    with torch.inference_mode(), capture(model) as maps:
        model(torch.randn(2, 3, 32, 32))
        model(torch.randn(3, 3, 32, 32))
    assert maps["layer4.1.se.gate"].shape[0] == 5


def test_threads_on_one_shared_model_get_their_own_results(tiny_env):
    model = attnviz.load_model("tiny_sa_resnet18")
    images = [noise_image(90 + 7 * i, 60 + 5 * i, seed=i) for i in range(4)]
    serial = [attnviz.analyze(im, model) for im in images]
    results: dict[int, attnviz.Analysis] = {}
    barrier = threading.Barrier(len(images))

    def work(i):
        barrier.wait()
        for _ in range(3):
            results[i] = attnviz.analyze(images[i], model)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(len(images))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for i, a in enumerate(serial):
        torch.testing.assert_close(results[i].probs, a.probs)
        for k in a.self_attn:
            torch.testing.assert_close(results[i].self_attn[k], a.self_attn[k])
    assert _hook_count(model) == 0
