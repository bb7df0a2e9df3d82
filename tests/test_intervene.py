"""Interventions: each replaces exactly the tensor it says, only inside its ``with``,
only for its own thread, and the model is the same afterwards."""

import json
from concurrent.futures import ThreadPoolExecutor

import pytest
import torch

import attnviz
from attnviz.capture import attention_modules, capture
from attnviz.cli import main
from attnviz.intervene import DEFAULT_K, INTERVENTIONS, intervention, shipped_profile
from attnviz.layers import SelfAttention2d
from attnviz.profile import SEProfile
from attnviz.weights import save_pair

from .conftest import CLASSES, noise_image, tiny_meta, tiny_model


def _hook_count(model):
    return sum(len(m._forward_hooks) + len(m._forward_pre_hooks) for m in model.modules())


def _state(model):
    return {k: v.clone() for k, v in model.state_dict().items()}


def _gates(model, x, *changes):
    """Every attention output of ``model(x)``, inside the interventions ``changes``."""
    with torch.inference_mode():
        if not changes:
            with capture(model) as maps:
                model(x)
            return dict(maps)
        with changes[0], capture(model) as maps:
            model(x)
        return dict(maps)


X = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(0))


@pytest.mark.parametrize("arch", ["se_resnet18", "cbam_resnet18"])
def test_gates_off_makes_every_channel_gate_exactly_one_and_leaves_the_spatial_maps(arch):
    model = tiny_model(arch)
    changed = intervention(model, "gates-off")
    kinds = attention_modules(model)
    assert changed.layers == [p for p, kind in kinds.items() if kind in ("se", "cbam_channel")]
    maps = _gates(model, X, changed)
    for path, kind in kinds.items():
        if kind in ("se", "cbam_channel"):
            assert torch.equal(maps[path], torch.ones_like(maps[path])), path
        else:  # the spatial gates are computed, not replaced: in 0..1, not all 1
            assert maps[path].shape[1] == 1 and not torch.equal(maps[path], torch.ones_like(maps[path]))


def test_a_block_prefix_or_a_module_path_selects_one_block_and_earlier_blocks_are_untouched():
    model = tiny_model("se_resnet18")
    plain = _gates(model, X)
    assert intervention(model, "gates-off", "layer3.1").layers == ["layer3.1.se.gate"]
    assert intervention(model, "gates-off", "layer3.1.se.gate").layers == ["layer3.1.se.gate"]
    assert intervention(model, "gates-off", "layer2").layers == ["layer2.0.se.gate", "layer2.1.se.gate"]
    maps = _gates(model, X, intervention(model, "gates-off", "layer3.1"))
    assert torch.equal(maps["layer3.1.se.gate"], torch.ones_like(plain["layer3.1.se.gate"]))
    for path in ["layer1.0.se.gate", "layer2.1.se.gate", "layer3.0.se.gate"]:
        assert torch.equal(maps[path], plain[path]), path
    assert not torch.equal(maps["layer4.0.se.gate"], plain["layer4.0.se.gate"])  # downstream of the change


@pytest.mark.parametrize("k", [1, 3, DEFAULT_K])
def test_knockout_top_zeros_exactly_the_k_largest_gates_of_each_image(k):
    model = tiny_model("cbam_resnet18")
    plain = _gates(model, X)
    maps = _gates(model, X, intervention(model, "knockout-top", "layer1.0", k=k))
    before, after = plain["layer1.0.cbam.channel.gate"][:, :, 0, 0], maps["layer1.0.cbam.channel.gate"][:, :, 0, 0]
    for b in range(len(X)):
        top = set(before[b].topk(k).indices.tolist())
        assert set((after[b] == 0).nonzero().flatten().tolist()) == top
        rest = [c for c in range(before.shape[1]) if c not in top]
        assert torch.equal(after[b, rest], before[b, rest])
    # every block, each image: exactly k zeros
    for gate in _gates(model, X, intervention(model, "knockout-top", k=k)).values():
        if gate.shape[1] > 1:  # channel gates, not the (B, 1, H, W) spatial maps
            assert ((gate[:, :, 0, 0] == 0).sum(1) == k).all()


def test_spatial_mean_is_constant_per_image_and_spatial_invert_is_one_minus_the_map():
    model = tiny_model("cbam_resnet18")
    plain = _gates(model, X)
    first = "layer1.0.cbam.spatial.gate"
    meaned = _gates(model, X, intervention(model, "spatial-mean"))
    for path, g in meaned.items():
        if path.endswith("spatial.gate"):
            assert (g == g[:, :, :1, :1]).all(), path  # one value per image
    torch.testing.assert_close(meaned[first], plain[first].mean((2, 3), keepdim=True).expand_as(plain[first]))
    assert torch.equal(meaned["layer1.0.cbam.channel.gate"], plain["layer1.0.cbam.channel.gate"])
    inverted = _gates(model, X, intervention(model, "spatial-invert"))
    assert torch.equal(inverted[first], 1 - plain[first])
    assert len(intervention(model, "spatial-invert").layers) == 8


def test_attn_uniform_rows_are_one_over_n_and_attn_self_is_the_identity():
    model = tiny_model("sa_resnet18")
    uniform = _gates(model, X, intervention(model, "attn-uniform"))
    alone = _gates(model, X, intervention(model, "attn-self"))
    assert set(uniform) == set(alone) == {"layer2.1.attn.softmax", "layer3.1.attn.softmax"}
    for path, a in uniform.items():
        n = a.shape[-1]
        assert a.shape == (2, model.get_submodule(path[: -len(".softmax")]).num_heads, n, n)
        assert torch.equal(a, torch.full_like(a, 1 / n))
        torch.testing.assert_close(a.sum(-1), torch.ones(a.shape[:-1]))
        assert torch.equal(alone[path], torch.eye(n).expand_as(a))


def test_what_the_layer_outputs_under_attn_self_and_attn_uniform():
    """attn-self: each position keeps its own value, x + bn(proj(v(x))); attn-uniform:
    every position gets the mean value over the image."""
    torch.manual_seed(0)
    layer = SelfAttention2d(8, num_heads=2).eval()
    torch.nn.init.uniform_(layer.bn.weight, 0.5, 1.5)
    x = torch.randn(2, 8, 5, 6)
    with torch.inference_mode():
        with intervention(layer, "attn-self") as paths:
            out = layer(x)
        assert paths == ["softmax"]
        torch.testing.assert_close(out, x + layer.bn(layer.proj(layer.v(x))))
        with intervention(layer, "attn-uniform"):
            out = layer(x)
        v_mean = layer.v(x).mean((2, 3), keepdim=True).expand_as(x)
        torch.testing.assert_close(out, x + layer.bn(layer.proj(v_mean)))


def _profile(model, name, value=0.25):
    """A profile of ``model``: class k's mean gates all ``value`` + k/10."""
    means = {p: [[value + k / 10] * model.get_submodule(p[: -len(".gate")]).fc2.out_channels
                 for k in range(len(CLASSES))]
             for p, kind in attention_modules(model).items() if kind == "se"}
    return SEProfile(model=name, classes=list(CLASSES), images=30, means=means, specificity=dict.fromkeys(means, 0.0))


def test_gates_mean_sets_every_gate_to_the_mean_over_the_classes_of_the_profile():
    model = tiny_model("se_resnet18")
    maps = _gates(model, X, intervention(model, "gates-mean", profile=_profile(model, "tiny_se_resnet18")))
    for g in maps.values():
        torch.testing.assert_close(g, torch.full_like(g, 0.35))  # the mean of 0.25, 0.35, 0.45


def test_gates_mean_on_the_shipped_se_model_uses_its_shipped_profile():
    model = attnviz.load_model("se_resnet18")
    prof = shipped_profile(model)
    assert prof is not None and prof.model == "se_resnet18"
    maps = _gates(model, torch.randn(1, 3, 96, 96), intervention(model, "gates-mean", "layer4.1"))
    expected = torch.tensor(prof.means["layer4.1.se.gate"], dtype=torch.float64).mean(0).float()
    assert torch.equal(maps["layer4.1.se.gate"][0, :, 0, 0], expected)


def test_gates_mean_without_a_fitting_profile_is_one_clear_line():
    se, cbam = tiny_model("se_resnet18"), tiny_model("cbam_resnet18")
    with pytest.raises(ValueError, match="^AttnResNet has no SE excitation profile") as e:
        intervention(se, "gates-mean")
    assert "\n" not in str(e.value)
    with pytest.raises(ValueError, match="cbam_resnet18 has no SE excitation profile"):
        intervention(attnviz.load_model("cbam_resnet18"), "gates-mean")
    with pytest.raises(ValueError, match="has no mean gates for layer1.0.cbam.channel.gate"):
        intervention(cbam, "gates-mean", profile=_profile(se, "tiny_se_resnet18"))
    wide = tiny_model("se_resnet18")
    prof = _profile(wide, "x")
    prof.means["layer1.0.se.gate"] = [[0.5] * 3] * 3
    with pytest.raises(ValueError, match="3 mean gates for layer1.0.se.gate, but the model has 8 channels"):
        _gates(wide, X, intervention(wide, "gates-mean", profile=prof))


def test_the_model_is_the_same_afterwards_also_after_an_exception(tiny_env, jpeg_file):
    model = attnviz.load_model("tiny_cbam_resnet18")  # one loaded model, reused as a cache would
    state, hooks = _state(model), _hook_count(model)
    first = attnviz.analyze(jpeg_file, model)
    for what in ["gates-off", "knockout-top", "spatial-mean", "spatial-invert"]:
        r = attnviz.intervene(jpeg_file, model, what, k=2 if what == "knockout-top" else None)
        assert r.after.shape == r.before.shape and not torch.equal(r.after, r.before), what
    with pytest.raises(ValueError, match="k = 9 is more than the 8 channels of layer1.0.cbam.channel.gate"):
        attnviz.intervene(jpeg_file, model, "knockout-top", k=9)  # raised inside the forward pass
    changed = intervention(model, "gates-off")
    with pytest.raises(RuntimeError, match="boom"), changed:
        assert _hook_count(model) == hooks + 8
        raise RuntimeError("boom")
    changed.remove_hooks()  # safe twice
    assert _hook_count(model) == hooks and not model.training
    assert all(torch.equal(v, state[k]) for k, v in model.state_dict().items())
    again = attnviz.analyze(jpeg_file, model)  # no leak into the next analysis
    assert torch.equal(again.probs, first.probs) and again.top_k(5) == first.top_k(5)
    for path, g in first.cbam_spatial.items():
        assert torch.equal(again.cbam_spatial[path], g)


def test_other_threads_on_a_shared_model_are_not_changed():
    model = tiny_model("se_resnet18")
    with torch.inference_mode():
        plain = model(X)
        with ThreadPoolExecutor(1) as pool, intervention(model, "gates-off"):
            mine = model(X)
            theirs = pool.submit(lambda: model(X)).result()
    assert torch.equal(theirs, plain) and not torch.equal(mine, plain)


def test_before_is_what_analyze_predicts_from_a_path_bytes_or_pil_image(tiny_env, jpeg_file):
    model = attnviz.load_model("tiny_sa_resnet18")
    a = attnviz.analyze(jpeg_file, model)
    for source in [jpeg_file, str(jpeg_file), jpeg_file.read_bytes()]:
        r = attnviz.intervene(source, model, "attn-uniform")
        assert torch.equal(r.before, a.probs) and r.top_k(5) == a.top_k(5)
    photo = noise_image(90, 150, seed=3, mode="RGBA")
    assert torch.equal(attnviz.intervene(photo, model, "attn-self").before, attnviz.analyze(photo, model).probs)
    assert r.layers == ["layer2.1.attn.softmax", "layer3.1.attn.softmax"]
    name, p0, p1 = r.delta
    assert name == r.top_k(1)[0][0] and p0 == r.top_k(1)[0][1] and p1 == float(r.after[CLASSES.index(name)])
    chosen = attnviz.intervene(jpeg_file, model, "attn-self", target="gamma")
    assert chosen.delta[0] == "gamma"


def test_a_plain_module_without_metadata_works():
    r = attnviz.intervene(noise_image(50, 40), tiny_model("se_resnet18"), "gates-off", size=64)
    assert r.model_name == "AttnResNet" and r.classes == ["class 0", "class 1", "class 2"]


@pytest.mark.parametrize("what, layer, k, error, match", [
    ("attn-uniform", None, None, ValueError, "tiny_se_resnet18 has no self-attention layers: nothing for attn-uniform"),
    ("spatial-mean", None, None, ValueError, "tiny_se_resnet18 has no CBAM spatial gates"),
    ("gates-of", None, None, ValueError, "unknown intervention 'gates-of'; one of: gates-off, gates-mean"),
    ("gates-off", "layer9", None, KeyError, r"no layer 'layer9' for gates-off .* one of: layer1.0.se.gate, "),
    ("gates-off", "layer1.0.s", None, KeyError, "no layer 'layer1.0.s'"),
    ("gates-off", None, 3, ValueError, "k applies only to knockout-top, not to gates-off"),
    ("knockout-top", None, 0, ValueError, "k must be at least 1, got 0"),
])
def test_bad_settings_are_one_line_before_any_hook(tiny_env, what, layer, k, error, match):
    model = attnviz.load_model("tiny_se_resnet18")
    with pytest.raises(error, match=match) as e:
        intervention(model, what, layer, k=k)
    assert "\n" not in str(e.value) and _hook_count(model) == 0


def test_a_layer_of_another_kind_is_refused_and_an_unknown_class_too(tiny_env, jpeg_file):
    model = tiny_model("cbam_resnet18")
    with pytest.raises(KeyError, match="no layer 'layer1.0.cbam.spatial.gate' for gates-off"):
        intervention(model, "gates-off", "layer1.0.cbam.spatial.gate")
    assert intervention(model, "spatial-mean", "layer1.0.cbam").layers == ["layer1.0.cbam.spatial.gate"]
    with pytest.raises(KeyError, match="unknown class 'zeta'; tiny_se_resnet18 knows: alpha, beta, gamma"):
        attnviz.intervene(jpeg_file, "tiny_se_resnet18", "gates-off", target="zeta")


def test_cli_json_contract_on_a_shipped_model(capsys):
    image = str(attnviz.__path__[0]) + "/samples/cat.jpg"
    assert main(["intervene", image, "--model", "se_resnet18", "--what", "knockout-top", "--k", "4",
                 "--layer", "layer4.1", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert {"before", "after", "what", "layers"} <= set(out)
    assert out["what"] == "knockout-top" and out["layers"] == ["layer4.1.se.gate"] and out["k"] == 4
    assert out["before"] == [list(t) for t in attnviz.analyze(image, "se_resnet18").top_k(5)]
    for side in ("before", "after"):
        assert len(out[side]) == 5 and all(isinstance(c, str) and 0 <= p <= 1 for c, p in out[side])
        assert [p for _, p in out[side]] == sorted((p for _, p in out[side]), reverse=True)
    assert out["delta"]["class"] == out["before"][0][0] and out["delta"]["before"] == out["before"][0][1]


def test_cli_table_and_gates_mean_with_a_profile_next_to_the_weights(tmp_path, monkeypatch, jpeg_file, capsys):
    model = tiny_model("se_resnet18")
    save_pair(model, tiny_meta("se_resnet18", "mine"), tmp_path)
    (tmp_path / "mine.profile.json").write_text(_profile(model, "mine").to_json())
    monkeypatch.setenv("ATTNVIZ_WEIGHTS_DIR", str(tmp_path))
    assert main(["intervene", str(jpeg_file), "--model", "mine", "--what", "gates-mean"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == "mine: gates-mean in 8 modules (layer1.0.se.gate ... layer4.1.se.gate)"
    assert len(lines) == 2 + 3 + 1 and " -> " in lines[-1] and lines[-1].endswith(" points)")


@pytest.mark.parametrize("args, message", [
    (["--model", "tiny_se_resnet18", "--what", "attn-self"],
     "attnviz: error: tiny_se_resnet18 has no self-attention layers: nothing for attn-self to change"),
    (["--model", "tiny_cbam_resnet18", "--what", "knockout-top", "--k", "100"],
     "attnviz: error: k = 100 is more than the 8 channels of layer1.0.cbam.channel.gate"),
    (["--model", "tiny_sa_resnet18", "--what", "attn-self", "--layer", "layer4"],
     "attnviz: error: no layer 'layer4' for attn-self in tiny_sa_resnet18; choose a block (e.g. layer2.1) "
     "or one of: layer2.1.attn.softmax, layer3.1.attn.softmax"),
    (["--model", "tiny_se_resnet18", "--what", "gates-mean"],
     "attnviz: error: tiny_se_resnet18 has no SE excitation profile"),
])
def test_cli_errors_are_one_line_and_exit_status_2(tiny_env, jpeg_file, capsys, args, message):
    assert main(["intervene", str(jpeg_file), *args, "--json"]) == 2
    captured = capsys.readouterr()
    assert captured.out == "" and captured.err.startswith(message) and captured.err.count("\n") == 1


def test_every_intervention_is_a_cli_choice():
    from attnviz.cli import build_parser

    sub = next(a for a in build_parser()._actions if a.dest == "command").choices["intervene"]
    assert tuple(next(a for a in sub._actions if a.dest == "what").choices) == INTERVENTIONS
