import threading

import pytest
import torch

import attnviz
from attnviz.capture import attention_modules, capture
from attnviz.layers import gate

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


def _listeners() -> int:
    return len(getattr(gate._local, "listeners", []))


def test_nothing_is_left_attached_also_after_an_exception():
    model = tiny_model("cbam_resnet18")
    before = _hook_count(model)
    with capture(model, [*attention_modules(model), "layer1.0.conv1"]) as maps:
        # the 16 gates report to the capture's one listener: only the convolution is hooked
        assert _hook_count(model) == before + 1 and _listeners() == 1
        model(torch.randn(1, 3, 32, 32))
    assert len(maps) == 17
    assert _hook_count(model) == before and _listeners() == 0
    with pytest.raises(RuntimeError, match="boom"):
        with capture(model):
            raise RuntimeError("boom")
    assert _hook_count(model) == before and _listeners() == 0


def test_a_gate_with_a_hook_is_captured_as_that_hook_left_it():
    model = tiny_model("se_resnet18")
    x = torch.randn(1, 3, 32, 32)
    h = model.get_submodule("layer1.0.se.gate").register_forward_hook(lambda m, i, o: torch.ones_like(o))
    try:
        with torch.inference_mode(), capture(model) as maps:
            model(x)
    finally:
        h.remove()
    assert torch.equal(maps["layer1.0.se.gate"], torch.ones_like(maps["layer1.0.se.gate"]))
    with torch.inference_mode(), capture(model) as plain:  # the same gate, reporting, without the hook
        model(x)
    assert not torch.equal(plain["layer1.0.se.gate"], maps["layer1.0.se.gate"])
    torch.testing.assert_close(plain["layer1.1.se.gate"], maps["layer1.1.se.gate"])


def test_a_capture_inside_a_capture_records_in_both():
    model = tiny_model("se_resnet18")
    with torch.inference_mode(), capture(model) as outer:
        with capture(model, ["layer2.0.se.gate"]) as inner:
            model(torch.randn(2, 3, 32, 32))
        model(torch.randn(1, 3, 32, 32))
    assert list(inner) == ["layer2.0.se.gate"] and inner["layer2.0.se.gate"].shape[0] == 2
    assert outer["layer2.0.se.gate"].shape[0] == 3
    torch.testing.assert_close(outer["layer2.0.se.gate"][:2], inner["layer2.0.se.gate"])


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


class _GateChangedInPlace(torch.nn.Module):
    """An SE block whose code changes the gate tensor in place after using it, as
    in-place blocks may do: the capture must keep the values the gate had."""

    def __init__(self) -> None:
        super().__init__()
        from attnviz.layers import SqueezeExcite

        self.se = SqueezeExcite(8, reduction=4)

    def forward(self, x):
        g = self.se.gate(self.se.fc2(self.se.act(self.se.fc1(x.mean((2, 3), keepdim=True)))))
        out = x * g
        g.mul_(0)
        return out


def test_gates_are_kept_as_they_were_even_if_changed_in_place_later():
    torch.manual_seed(0)
    model = _GateChangedInPlace().eval()
    x = torch.randn(2, 8, 5, 5)
    with torch.no_grad(), capture(model) as maps:
        out = model(x)
    torch.testing.assert_close(out, x * maps["se.gate"])
    assert maps["se.gate"].abs().min() > 0  # not the zeros written afterwards


def test_a_half_precision_model_is_captured_in_float32_on_the_cpu():
    model = tiny_model("sa_resnet18")
    x = torch.randn(1, 3, 64, 64)
    with torch.inference_mode(), capture(model) as exact:
        model(x)
    half = tiny_model("sa_resnet18").to(torch.bfloat16)
    with torch.inference_mode(), capture(half) as maps:
        half(x.to(torch.bfloat16))
    for name, t in maps.items():
        assert t.dtype == torch.float32 and t.device.type == "cpu", name
        torch.testing.assert_close(t, exact[name], atol=0.05, rtol=0.1)


def test_a_module_shared_under_two_names_is_listed_once_by_its_first_name():
    from attnviz.layers import SqueezeExcite

    shared = SqueezeExcite(8, reduction=4)
    model = torch.nn.Sequential(shared, torch.nn.ReLU(), shared, SqueezeExcite(8, reduction=4))
    assert attention_modules(model) == {"0.gate": "se", "3.gate": "se"}  # and the walk goes on after it
    assert attention_modules(shared) == {"gate": "se"}  # the model itself an attention module


def test_other_modules_can_be_captured_by_name_and_are_of_kind_other():
    model = tiny_model("se_resnet18")
    with torch.inference_mode(), capture(model, ["layer1", "layer1.0.se.gate"]) as maps:
        model(torch.randn(1, 3, 64, 64))
    assert maps.kinds == {"layer1": "other", "layer1.0.se.gate": "se"}
    assert maps["layer1"].shape == (1, 8, 16, 16)


def test_a_wrong_name_on_a_model_without_attention_says_none():
    plain = attnviz.build_model("resnet18", width=8, num_classes=4)
    with pytest.raises(KeyError, match="attention outputs are: none"):
        capture(plain, ["nope"])
    with pytest.raises(KeyError, match=r"attention outputs are: layer1\.0\.se\.gate, layer1\.1\.se\.gate, "):
        capture(tiny_model("se_resnet18"), ["nope"])
