"""timm models in attnviz (issue 22): every captured tensor checked against the module's
own output, recomputed here independently; the checkpoint round trip; wrong checkpoints
refused in one line. Untrained timm models (no download), tiny inputs."""

import json
import pickle
import socket
import subprocess
import sys

import numpy as np
import pytest
import torch

timm = pytest.importorskip("timm")

from timm.layers.bottleneck_attn import BottleneckAttn  # noqa: E402
from timm.layers.halo_attn import HaloAttn  # noqa: E402
from timm.layers.lambda_layer import LambdaLayer  # noqa: E402
from timm.models.resnet import BasicBlock, ResNet  # noqa: E402

import attnviz  # noqa: E402
from attnviz import timm_adapter  # noqa: E402
from attnviz.capture import attention_modules, capture  # noqa: E402
from attnviz.weights import WeightsError  # noqa: E402

from .conftest import noise_image, one_line, randomise_bn  # noqa: E402


@pytest.fixture(autouse=True)
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    with torch.inference_mode():  # the tests' own recomputations, on captured inference tensors
        yield
    torch.set_num_threads(threads)


_randomise = randomise_bn


def resnet(attn_layer: str) -> torch.nn.Module:
    """A tiny timm ResNet-10 with ``attn_layer`` in every block."""
    torch.manual_seed(0)
    return _randomise(ResNet(BasicBlock, [1, 1, 1, 1], num_classes=5, block_args=dict(attn_layer=attn_layer)))


def run(model, modules_of_type, size=64):
    """One forward pass under ``capture``; returns (maps, {module path: (input, output)})
    of every module of the given types, recorded by the test's own hooks."""
    io, handles = {}, []
    for path, m in model.named_modules():
        if isinstance(m, modules_of_type):
            # cloned: blocks change their output in place afterwards (``x += shortcut``)
            handles.append(m.register_forward_hook(
                lambda mod, i, o, path=path: io.__setitem__(path, (i[0].clone(), o.clone()))))
    try:
        torch.manual_seed(1)
        with torch.inference_mode(), capture(model) as maps:
            model(torch.randn(2, 3, size, size))
    finally:
        for h in handles:
            h.remove()
    return maps, io


def _hooks(model):
    return sum(len(m._forward_hooks) + len(m._forward_pre_hooks) for m in model.modules())


@pytest.mark.parametrize("attn_layer, kind", [("se", "se"), ("ese", "se"), ("eca", "se"), ("ceca", "se")])
def test_se_and_eca_blocks_output_their_input_times_the_captured_gate(attn_layer, kind):
    model = resnet(attn_layer)
    parents = {type(model.get_submodule(p.rsplit(".", 1)[0])) for p in attention_modules(model)}
    maps, io = run(model, tuple(parents))
    gates = maps.of_kind(kind)
    assert len(gates) == 4 and set(attention_modules(model).values()) == {kind}
    for path, g in gates.items():
        x, y = io[path.rsplit(".", 1)[0]]
        assert g.shape == (2, x.shape[1], 1, 1) and 0 <= g.min() and g.max() <= 1
        torch.testing.assert_close(y, x * g)


def test_legacy_senet_gate_multiplies_the_features():
    model = _randomise(timm.create_model("legacy_seresnet18", pretrained=False, num_classes=5))
    from timm.models.senet import SEModule

    maps, io = run(model, (SEModule,))
    assert len(maps) == 8 and all(p.endswith(".se_module.sigmoid") for p in maps)
    for path, g in maps.items():
        x, y = io[path[: -len(".sigmoid")]]
        torch.testing.assert_close(y, x * g)


@pytest.mark.parametrize("attn_layer", ["cbam", "lcbam"])
def test_cbam_and_light_cbam_gates_multiply_the_features(attn_layer):
    from timm.layers.cbam import ChannelAttn, LightSpatialAttn, SpatialAttn

    model = resnet(attn_layer)
    maps, io = run(model, (ChannelAttn, SpatialAttn, LightSpatialAttn))
    channel, spatial = maps.of_kind("cbam_channel"), maps.of_kind("cbam_spatial")
    assert len(channel) == len(spatial) == 4
    for path, g in channel.items():
        x, y = io[path.rsplit(".", 1)[0]]
        assert g.shape == (2, x.shape[1], 1, 1)
        torch.testing.assert_close(y, x * g)
    for path, g in spatial.items():
        x, y = io[path.rsplit(".", 1)[0]]
        assert g.shape == (2, 1, *x.shape[2:]) and 0 <= g.min() and g.max() <= 1
        torch.testing.assert_close(y, x * g)


@pytest.mark.parametrize("attn_layer", ["gc", "gca"])
def test_global_context_map_pools_the_context_that_the_block_adds_or_scales_by(attn_layer):
    from timm.layers.global_context import GlobalContext

    model = resnet(attn_layer)
    for m in model.modules():
        if isinstance(m, GlobalContext) and m.mlp_add is not None:
            torch.nn.init.normal_(m.mlp_add.fc2.weight, std=0.1)  # zero-init would hide the addition
    maps, io = run(model, (GlobalContext,))
    context = maps.of_kind("context")
    assert len(context) == 4
    for path, a in context.items():
        block = path[: -len(".conv_attn")]
        m, (x, y) = model.get_submodule(block), io[block]
        B, C, H, W = x.shape
        assert a.shape == (B, 1, H, W)
        torch.testing.assert_close(a.sum((2, 3)), torch.ones(B, 1))
        pooled = (x * a).sum((2, 3), keepdim=True)  # the context: a weighted mean of positions
        if attn_layer == "gc":
            gate = maps[f"{block}.gate"]
            torch.testing.assert_close(gate, torch.sigmoid(m.mlp_scale(pooled)))
            torch.testing.assert_close(y, x * gate)
        else:
            torch.testing.assert_close(y, x + m.mlp_add(pooled))


class _Net(torch.nn.Module):
    """A stem and one timm attention layer: the layer alone, at a tiny input."""

    def __init__(self, layer: torch.nn.Module, dim: int = 32) -> None:
        super().__init__()
        self.stem = torch.nn.Conv2d(3, dim, 3, stride=2, padding=1)
        self.attn = layer

    def forward(self, x):
        return self.attn(self.stem(x))


def _bottleneck(scale_pos_embed: bool, stride: int = 1) -> torch.nn.Module:
    torch.manual_seed(0)
    return _Net(BottleneckAttn(32, feat_size=(8, 8), stride=stride, num_heads=4, scale_pos_embed=scale_pos_embed))


@pytest.mark.parametrize("scale_pos_embed, stride", [(False, 1), (True, 2)])
def test_botnet_matrix_is_what_multiplies_the_values(scale_pos_embed, stride):
    model = _bottleneck(scale_pos_embed, stride).eval()
    maps, io = run(model, (BottleneckAttn,), size=16)
    a = maps["attn"]
    m, (x, y) = model.attn, io["attn"]
    assert a.shape == (2, 4, 64, 64) and attention_modules(model) == {"attn": "self_attn"}
    torch.testing.assert_close(a.sum(-1), torch.ones(2, 4, 64))
    v = m.qkv(x)[:, 2 * m.dim_out_qk:].reshape(2, 4, m.dim_head_v, 64)  # (B, heads, dv, N)
    out = (a @ v.transpose(-1, -2)).transpose(-1, -2).reshape(2, m.dim_out_v, 8, 8)
    torch.testing.assert_close(m.pool(out), y)


@pytest.mark.parametrize("stride", [1, 2])
def test_halonet_windows_placed_at_image_positions_are_what_multiplies_the_values(stride):
    torch.manual_seed(0)
    model = _Net(HaloAttn(32, stride=stride, num_heads=2, block_size=4, halo_size=1)).eval()
    maps, io = run(model, (HaloAttn,), size=32)  # a 16 x 16 grid: 4 x 4 blocks of 4 x 4, windows of 6 x 6
    a = maps["attn"]
    m, (x, y) = model.attn, io["attn"]
    assert a.shape == (2, 2, 256, 256)
    assert (a >= 0).all() and (a.sum(-1) <= 1 + 1e-5).all()
    rows, cols = torch.meshgrid(torch.arange(16), torch.arange(16), indexing="ij")
    # zero outside each query's 6 x 6 window; a query of an inner block, whose window
    # holds no padding, sums to 1
    q = 5 * 16 + 5  # cell (5, 5): block (1, 1) covers rows and cols 4..7, its window 3..8
    inside = (rows >= 3) & (rows <= 8) & (cols >= 3) & (cols <= 8)
    if stride == 1:
        assert (a[:, :, q].reshape(2, 2, 16, 16)[:, :, ~inside] == 0).all()
        torch.testing.assert_close(a[:, :, q].sum(-1), torch.ones(2, 2))
    # values at every cell (the padding's are 0); HaloAttn splits k and v within each head
    v = m.kv(x).reshape(2, 2, m.dim_head_qk + m.dim_head_v, 256)[:, :, m.dim_head_qk:]
    out = (a @ v.transpose(-1, -2))  # (B, heads, N, dv)
    if stride == 2:  # each query's row stands at each cell of its 2 x 2 patch: take one
        keep = ((rows % 2 == 0) & (cols % 2 == 0)).reshape(-1)
        out = out[:, :, keep]
        torch.testing.assert_close(a.reshape(2, 2, 8, 2, 8, 2, 256)[:, :, :, 0, :, 0],
                                   a.reshape(2, 2, 8, 2, 8, 2, 256)[:, :, :, 1, :, 1])
    side = 16 // stride
    out = out.transpose(-1, -2).reshape(2, m.dim_out_v, side, side)
    torch.testing.assert_close(m.pool(out), y)


def test_lambda_key_maps_are_the_content_lambdas_softmax():
    torch.manual_seed(0)
    model = _randomise(_Net(LambdaLayer(32, num_heads=4, dim_head=8, r=5)))
    maps, io = run(model, (LambdaLayer,), size=16)
    k = maps["attn.qkv"]
    m, (x, y) = model.attn, io["attn"]
    assert attention_modules(model) == {"attn.qkv": "context"} and k.shape == (2, 8, 8, 8)
    torch.testing.assert_close(k.sum((2, 3)), torch.ones(2, 8))
    # The layer's output, rebuilt with the captured keys: q (K @ V) + q (position lambdas)
    B, M = 2, 64
    qkv = m.qkv(x)
    q, _, v = torch.split(qkv, [m.num_heads * m.dim_qk, m.dim_qk, m.dim_v], dim=1)
    q = m.norm_q(q).reshape(B, m.num_heads, m.dim_qk, M).transpose(-1, -2)
    v = m.norm_v(v).reshape(B, m.dim_v, M).transpose(-1, -2)
    content = q @ (k.reshape(B, m.dim_qk, M) @ v).unsqueeze(1)
    pos = m.conv_lambda(v.reshape(B, 1, 8, 8, m.dim_v)).reshape(B, 1, m.dim_qk, M, m.dim_v).transpose(2, 3)
    out = content + (q.unsqueeze(-2) @ pos).squeeze(-2)
    torch.testing.assert_close(out.transpose(-1, -2).reshape(B, -1, 8, 8), y)
    assert "no per-query map" in timm_adapter.summary_line(model, attention_modules(model))


def test_capture_leaves_no_hook_and_changes_nothing_also_after_an_exception():
    model = _bottleneck(False).eval()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    hooks = _hooks(model)
    with pytest.raises(RuntimeError, match="boom"):
        with capture(model):
            assert _hooks(model) == hooks + 1
            model(torch.randn(1, 3, 16, 16))
            raise RuntimeError("boom")
    assert _hooks(model) == hooks and not model.training
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


def test_every_offered_architecture_has_the_kinds_its_row_says():
    for name, row in timm_adapter.SUPPORTED.items():
        model = timm.create_model(name, pretrained=False)
        assert set(attention_modules(model).values()) == set(row.kinds), name


def test_analyze_a_timm_model_with_its_own_preprocessing():
    model = attnviz.load_model("timm:halonet26t", pretrained=False)
    meta = model.attnviz_meta
    assert (meta.input_size, meta.interpolation, meta.num_classes) == (256, "bicubic", 1000)
    assert meta.classes[0] == "tench" and meta.class_ids[0] == "n01440764"
    with pytest.raises(ValueError, match="timm:halonet26t does not run at a 128px input; its own size is 256px"):
        attnviz.analyze(noise_image(80, 60), model, size=128)
    a = attnviz.analyze(noise_image(80, 60), model)
    assert len(a.top_k(5)) == 5 and len(a.self_attn) == 3
    layer = next(iter(a.self_attn))
    assert a.query(layer, 40, 30).shape[1:] == a.self_attn_grid[layer]


def test_a_model_without_mappable_attention_still_predicts_and_says_what_it_found():
    model = attnviz.load_model("timm:test_vit", pretrained=False)
    a = attnviz.analyze(noise_image(64, 64), model)
    assert len(a.top_k(5)) == 5 and not (a.se or a.self_attn or a.context)
    line = timm_adapter.summary_line(model, attention_modules(model))
    assert line == "attention found: no attention attnviz can show; not shown: Attention"


# --- checkpoints -----------------------------------------------------------------------------------------------------


def _outputs(model):
    torch.manual_seed(3)
    with torch.inference_mode():
        return model(torch.randn(1, 3, 64, 64))


@pytest.mark.parametrize("suffix", [".safetensors", ".pth"])
def test_checkpoint_round_trip_gives_the_same_outputs(tmp_path, suffix):
    from safetensors.torch import save_file

    torch.manual_seed(0)
    model = _randomise(timm.create_model("test_efficientnet", pretrained=False))
    path = tmp_path / f"ckpt{suffix}"
    state = {k: v.contiguous() for k, v in model.state_dict().items()}
    if suffix == ".safetensors":
        save_file(state, str(path))
    else:
        torch.save({"state_dict": state, "epoch": 3}, path)  # a trainer's wrapper is unwrapped
    loaded = attnviz.load_model("timm:test_efficientnet", checkpoint=path)
    assert loaded is not model and not loaded.training
    torch.testing.assert_close(_outputs(loaded), _outputs(model), rtol=0, atol=0)
    assert len(attnviz.analyze(noise_image(64, 64), loaded).se) > 0  # efficientnet's SqueezeExcite


def test_a_fine_tuned_head_gives_a_model_of_its_size(tmp_path):
    model = timm.create_model("test_efficientnet", pretrained=False, num_classes=7)
    torch.save(model.state_dict(), tmp_path / "ft.pth")
    loaded = attnviz.load_model("timm:test_efficientnet", checkpoint=tmp_path / "ft.pth")
    assert loaded.attnviz_meta.classes == [f"class {i}" for i in range(7)]


class _Payload:
    def __reduce__(self):
        return (print, ("this must never run",))


_one_line = one_line


def test_wrong_checkpoints_are_refused_in_one_line(tmp_path):
    other = tmp_path / "other.pth"
    torch.save(timm.create_model("test_resnet", pretrained=False).state_dict(), other)
    with pytest.raises(WeightsError) as e:
        attnviz.load_model("timm:test_efficientnet", checkpoint=other)
    assert "is not a test_efficientnet checkpoint" in _one_line(e)

    state = timm.create_model("test_efficientnet", pretrained=False).state_dict()
    missing = tmp_path / "missing.pth"
    torch.save({k: v for k, v in state.items() if not k.startswith("conv_head")}, missing)
    with pytest.raises(WeightsError) as e:
        attnviz.load_model("timm:test_efficientnet", checkpoint=missing)
    assert "tensors missing (e.g. conv_head" in _one_line(e)

    code = tmp_path / "code.pth"
    code.write_bytes(pickle.dumps({"weight": _Payload()}, protocol=2))
    with pytest.raises(WeightsError) as e:
        attnviz.load_model("timm:test_efficientnet", checkpoint=code)
    assert "refused" in _one_line(e) and "was not run" in str(e.value)


def test_no_checkpoint_and_no_cache_is_one_line_and_nothing_is_downloaded(monkeypatch, tmp_path):
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path))  # an empty cache
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_CACHE", str(tmp_path))
    monkeypatch.setattr(socket.socket, "connect", lambda *a, **k: pytest.fail("a network connection was attempted"))
    with pytest.raises(WeightsError) as e:
        attnviz.load_model("timm:botnet26t_256")
    assert "not in the local Hugging Face cache" in _one_line(e)
    with pytest.raises(WeightsError) as e:
        attnviz.load_model("timm:no_such_net", pretrained=False)
    assert "timm has no model 'no_such_net'" in _one_line(e)


def test_the_local_hugging_face_cache_is_used(monkeypatch, tmp_path):
    from safetensors.torch import save_file

    model = _randomise(timm.create_model("test_efficientnet", pretrained=False))
    repo = tmp_path / "models--timm--test_efficientnet.r160_in1k"
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text("abc")
    (repo / "snapshots" / "abc").mkdir(parents=True)
    save_file({k: v.contiguous() for k, v in model.state_dict().items()},
              str(repo / "snapshots" / "abc" / "model.safetensors"))
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_CACHE", str(tmp_path))
    monkeypatch.setattr("huggingface_hub.file_download.HF_HUB_CACHE", str(tmp_path), raising=False)
    loaded = attnviz.load_model("timm:test_efficientnet")
    torch.testing.assert_close(_outputs(loaded), _outputs(model), rtol=0, atol=0)


def test_cli_explains_with_a_timm_checkpoint(tmp_path, capsys):
    from attnviz.cli import main

    model = _randomise(timm.create_model("test_efficientnet", pretrained=False))
    torch.save(model.state_dict(), tmp_path / "w.pth")
    img = tmp_path / "x.png"
    noise_image(70, 50).save(img)
    assert main(["explain", str(img), "--model", "timm:test_efficientnet", "--checkpoint", str(tmp_path / "w.pth"),
                 "--out", str(tmp_path / "out"), "--no-png", "--quiet"]) == 0
    assert "timm:test_efficientnet: attention found: " in capsys.readouterr().err
    npz = np.load(tmp_path / "out" / "x.npz")
    assert any(k.startswith("se/") for k in npz.files)
    assert main(["explain", str(img), "--model", "se_resnet18", "--checkpoint", "w.pth", "--out",
                 str(tmp_path / "o")]) == 2
    assert "are for timm models" in capsys.readouterr().err


def test_every_command_that_takes_a_model_takes_a_timm_checkpoint(tmp_path, capsys):
    from attnviz.cli import main

    model = _randomise(timm.create_model("test_efficientnet", pretrained=False))
    torch.save(model.state_dict(), tmp_path / "w.pth")
    img = tmp_path / "x.png"
    noise_image(70, 50).save(img)
    timm_args = ["--model", "timm:test_efficientnet", "--checkpoint", str(tmp_path / "w.pth")]
    assert main(["intervene", str(img), *timm_args, "--what", "gates-off", "--json"]) == 0
    captured = capsys.readouterr()
    r = json.loads(captured.out)  # stdout is the JSON alone; the found attention is said on stderr
    assert r["layers"] and len(r["before"]) == len(r["after"]) == 5
    assert "timm:test_efficientnet: attention found: " in captured.err
    # the checkpoint's weights, not random ones: the API's top-5 on the same image
    loaded = attnviz.load_model("timm:test_efficientnet", checkpoint=tmp_path / "w.pth")
    assert [c for c, _ in r["before"]] == [c for c, _ in attnviz.analyze(img, loaded).top_k(5)]
    for command in (["evaluate", str(tmp_path)], ["profile", str(tmp_path), "--out", str(tmp_path / "p")],
                    ["attention-stats", str(tmp_path)], ["faithfulness", str(tmp_path)]):
        assert main([*command, "--model", "se_resnet18", "--checkpoint", "w.pth"]) == 2
        assert "are for timm models" in capsys.readouterr().err
    assert main(["models"]) in (0, 1)
    assert "timm:seresnet50" in capsys.readouterr().out


def test_intervene_replaces_timm_gates_but_refuses_what_a_layer_computes_inline():
    model = resnet("se")
    before = {k: v.clone() for k, v in model.state_dict().items()}
    r = attnviz.intervene(noise_image(64, 64), model, "gates-off", size=64)
    assert len(r.layers) == 4 and all(p.endswith(".se.gate") for p in r.layers)
    # gates set to 1: the same network without its SE modules
    plain = ResNet(BasicBlock, [1, 1, 1, 1], num_classes=5).eval()
    plain.load_state_dict({k: v for k, v in model.state_dict().items() if ".se." not in k})
    x = attnviz.analysis.model_input(noise_image(64, 64), model, 64)[-1]
    torch.testing.assert_close(r.after, plain(x).softmax(-1)[0])
    torch.testing.assert_close(r.before, model(x).softmax(-1)[0])
    assert _hooks(model) == 0 and all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    with pytest.raises(ValueError) as e:
        attnviz.intervene(noise_image(16, 16), _bottleneck(False).eval(), "attn-uniform", size=32)
    assert "computed inside timm's layers" in _one_line(e)


def test_import_attnviz_does_not_import_timm():
    code = "import sys, attnviz, attnviz.cli, attnviz.timm_adapter; print('timm' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"


def test_the_app_registry_loads_a_timm_checkpoint_or_random_weights_and_refuses_a_wrong_one(tmp_path):
    from attnviz.app.service import ModelRegistry

    registry = ModelRegistry(upload_dir=tmp_path, max_uploads=2)
    handle = registry.add_timm("timm:test_efficientnet")
    assert handle.label == "timm:test_efficientnet (random weights)" and registry.upload(handle.key) is handle
    assert handle.attention_line().startswith("attention found: ")
    model = _randomise(timm.create_model("test_efficientnet", pretrained=False))
    buf = tmp_path / "w.pth"
    torch.save(model.state_dict(), buf)
    uploaded = registry.add_timm("timm:test_efficientnet", buf.read_bytes(), "w.pth")
    torch.testing.assert_close(_outputs(uploaded.model), _outputs(model), rtol=0, atol=0)
    with pytest.raises(WeightsError) as e:
        registry.add_timm("timm:test_resnet", buf.read_bytes(), "w.pth")
    assert "is not a test_resnet checkpoint" in _one_line(e)
    with pytest.raises(WeightsError) as e:
        registry.add_timm("timm:test_resnet", b"x", "w.zip")
    assert "expected a .safetensors, .pth, .pt or .bin file" in _one_line(e)
    assert list(tmp_path.glob("upload-*")) == []  # the uploaded file is deleted once loaded
