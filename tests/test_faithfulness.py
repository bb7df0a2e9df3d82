"""Faithfulness (attnviz.faithfulness): deletion curves and model randomisation."""

import json
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

import attnviz
from attnviz.analysis import analyze
from attnviz.cli import main
from attnviz.faithfulness import (
    FRACTIONS,
    RANDOMISED,
    auc,
    blurred,
    deletion_curves,
    deletion_inputs,
    map_layers,
    measure,
    randomized_copy,
    spearman,
    stratified,
    to_pixels,
)

from .conftest import noise_image, tiny_model
from .test_cam import _assert_unchanged, _snapshot

SAMPLES = Path(attnviz.__file__).parent / "samples"


class LeftHalfDetector(nn.Module):
    """Class 0's logit grows with the fine texture of the input's left half only (the
    energy that a blur removes); class 1's is 0. A map that points at the left half is
    the faithful one."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        detail = (x - F.avg_pool2d(x, 3, 1, 1, count_include_pad=False)).abs().mean(1)  # B, H, W
        left = detail[:, :, : x.shape[-1] // 2].mean((1, 2))
        return torch.stack([20 * (left - 0.35), torch.zeros_like(left)], dim=1)


def test_each_step_blurs_exactly_its_fraction_of_pixels_most_attended_first():
    rng = np.random.default_rng(0)
    x = torch.randn(1, 3, 32, 32)
    blur = blurred(x)
    m = torch.from_numpy(rng.random((4, 4)))  # distinct values: no ties
    batch = deletion_inputs(x, blur, [m], np.random.default_rng(1))
    assert batch.shape == (2 + 9, 3, 32, 32)
    assert torch.equal(batch[0], x[0]) and torch.equal(batch[1], blur[0])
    values = to_pixels(m, 32).flatten()
    previous = torch.zeros(32 * 32, dtype=torch.bool)
    for f, step in zip(FRACTIONS[1:-1], batch[2:]):
        gone = (step == blur[0]).all(0).flatten() & (step != x[0]).any(0).flatten()
        assert int(gone.sum()) == round(f * 32 * 32)
        assert float(values[gone].min()) >= float(values[~gone].max())  # the largest values go first
        assert torch.equal(step.flatten(1)[:, ~gone], x[0].flatten(1)[:, ~gone])
        assert bool((gone | ~previous).all())  # what was removed stays removed
        previous = gone


def test_blur_removes_detail_and_keeps_the_mean():
    x = torch.randn(1, 3, 64, 64)
    b = blurred(x)
    assert b.shape == x.shape and b.std() < 0.3 * x.std()
    assert torch.allclose(b.mean((2, 3)), x.mean((2, 3)), atol=0.05)


def test_a_faithful_map_deletes_faster_than_a_random_one_and_an_inverted_one_slowest():
    model = LeftHalfDetector()
    x = torch.randn(1, 3, 64, 64)
    left = torch.tensor([[1.0, 1.0, 0.0, 0.0]] * 4)
    rng = np.random.default_rng(0)
    curves = deletion_curves(model, x, [left, 1 - left, torch.from_numpy(rng.random((4, 4)))], 0, rng)
    p = model(x).softmax(-1)[0, 0].item()
    assert p > 0.99 and np.allclose(curves[:, 0], p, atol=1e-6)
    assert np.allclose(curves[:, -1], model(blurred(x)).softmax(-1)[0, 0].item(), atol=1e-6)
    faithful, inverted, random = (auc(c) for c in curves)
    assert 0 <= faithful < random < inverted <= 1
    assert curves[0, 5] < 0.05 < 0.95 < curves[1, 5]  # half the pixels gone: the left half, or the right


def test_auc_is_the_area_under_the_curve():
    assert auc(np.ones(len(FRACTIONS))) == pytest.approx(1)
    assert auc(np.zeros(len(FRACTIONS))) == 0
    assert auc(1 - np.array(FRACTIONS)) == pytest.approx(0.5)


def test_spearman_ranks_with_ties():
    scipy_stats = pytest.importorskip("scipy.stats")
    rng = np.random.default_rng(0)
    a, b = rng.integers(0, 5, (7, 7)), rng.random((7, 7))
    assert spearman(a, b) == pytest.approx(scipy_stats.spearmanr(a.ravel(), b.ravel()).statistic)
    assert spearman(b, b) == pytest.approx(1) and spearman(b, -b) == pytest.approx(-1)
    assert np.isnan(spearman(np.zeros((7, 7)), b))


def test_randomised_copy_changes_only_the_stage_and_never_the_model():
    model = tiny_model("cbam_resnet18")
    before = _snapshot(model)
    state = torch.random.get_rng_state()
    r = randomized_copy(model, ("layer4",), seed=1)
    assert torch.equal(torch.random.get_rng_state(), state)
    _assert_unchanged(model, before)
    again = randomized_copy(model, ("layer4",), seed=1).state_dict()
    convs = {f"{n}.{p}" for n, m in r.named_modules() if isinstance(m, nn.Conv2d) and n.startswith("layer4.")
             for p in ("weight", "bias") if getattr(m, p) is not None}
    assert len(convs) == 15  # per block conv1, conv2, CBAM's 2 MLP convs + biases, its spatial conv; + the 1x1 down
    for k, v in r.state_dict().items():
        assert torch.equal(again[k], v)  # seeded
        assert torch.equal(v, before[k][0]) != (k in convs), k  # every layer4 conv redrawn, all else kept
    assert not r.training and not any(p.requires_grad for p in r.parameters())


@pytest.fixture(scope="module")
def photos(tmp_path_factory):
    d = tmp_path_factory.mktemp("photos")
    for name in ("temple", "rocket"):
        shutil.copy(SAMPLES / f"{name}.jpg", d / f"{name}.jpg")
    return d


@pytest.mark.parametrize("name", ["cbam_resnet18", "sa_resnet18"])
def test_measure_on_shipped_models(name, photos):
    model = attnviz.load_model(name)
    before = _snapshot(model)
    files = sorted(photos.glob("*.jpg"))
    result = measure(files, model, seed=0)
    _assert_unchanged(model, before)
    out = result.to_json()
    kind = "cbam_spatial" if name.startswith("cbam") else "self_attn"
    assert out["images"] == 2 and set(out["maps"]) == {kind, "grad_cam"}
    probs = [float(analyze(f, model).probs.max()) for f in files]
    assert result.mean_probability == pytest.approx(np.mean(probs), abs=1e-5)
    for m in result.maps.values():
        for curve, p in zip(m.curves, probs):
            assert curve[0] == pytest.approx(p, abs=1e-5)  # 0 % removed: the untouched image's probability
        assert all(0 <= a <= 1 for a in m.auc + m.auc_random)
    assert out["maps"]["grad_cam"]["grid"] == [7, 7]
    # Re-initialising layer4 changes Grad-CAM of layer4; the self-attention map of layer3.1
    # lies before layer4, so only re-initialising layer3 too can change it.
    cam = out["maps"]["grad_cam"]["spearman"]
    assert all(v["mean"] is None or v["mean"] < 0.9 for v in cam.values())
    if kind == "self_attn":
        assert result.maps[kind].spearman["layer4"] == [1.0, 1.0]
        assert max(result.maps[kind].spearman["layer3-4"]) < 0.9
    else:
        assert result.maps[kind].layer == "layer4.1.cbam.spatial.gate"
        assert max(result.maps[kind].spearman["layer4"]) < 0.99
    assert measure(files[:1], model, seed=0).maps["grad_cam"].auc == result.maps["grad_cam"].auc[:1]  # seeded


def test_map_layers_last_of_each_kind_or_a_chosen_one():
    cbam, sa = tiny_model("cbam_resnet18"), tiny_model("sa_resnet18")
    assert map_layers(cbam) == {"cbam_spatial": "layer4.1.cbam.spatial.gate", "grad_cam": "layer4"}
    assert map_layers(sa) == {"self_attn": "layer3.1.attn.softmax", "grad_cam": "layer4"}
    assert map_layers(tiny_model("se_resnet18")) == {"grad_cam": "layer4"}
    assert map_layers(cbam, "layer3.1")["cbam_spatial"] == "layer3.1.cbam.spatial.gate"
    assert map_layers(sa, "layer2.1.attn.softmax")["self_attn"] == "layer2.1.attn.softmax"
    with pytest.raises(KeyError, match="it has: layer2.1.attn.softmax, layer3.1.attn.softmax"):
        map_layers(sa, "layer3.0")
    with pytest.raises(KeyError, match="it has: none"):
        map_layers(tiny_model("resnet18"), "layer3.1")


def test_stratified_takes_k_per_class_spread_over_each():
    files = [Path(f"/d/{c}/{i:03d}.jpg") for c in ("b", "a") for i in range(10 if c == "a" else 3)]
    got = stratified(files, 2)
    assert got == [Path("/d/a/000.jpg"), Path("/d/a/005.jpg"), Path("/d/b/000.jpg"), Path("/d/b/001.jpg")]
    assert stratified(files, 5)[5:] == [Path(f"/d/b/{i:03d}.jpg") for i in range(3)]
    with pytest.raises(ValueError):
        stratified(files, 0)


def test_cli_faithfulness_json_and_one_line_errors(tiny_env, tmp_path, capsys):
    for cls in ("a", "b"):
        (tmp_path / cls).mkdir()
        for i in range(3):
            noise_image(80, 64, seed=i + 10 * (cls == "b")).save(tmp_path / cls / f"{i}.png")
    assert main(["faithfulness", str(tmp_path), "--model", "tiny_cbam_resnet18", "--per-class", "1",
                 "--json", "--quiet"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["images"] == 2 and set(out["maps"]) == {"cbam_spatial", "grad_cam"}
    assert set(out["maps"]["grad_cam"]["spearman"]) == set(RANDOMISED)
    assert len(out["maps"]["grad_cam"]["curve"]) == len(FRACTIONS)
    assert main(["faithfulness", str(tmp_path), "--model", "tiny_resnet18", "--limit", "2", "--quiet"]) == 0
    text = capsys.readouterr().out
    assert "grad_cam" in text and "cbam_spatial" not in text and "2 images at 64px" in text
    for args, msg in ((["--limit", "1", "--per-class", "1"], "not both"), (["--per-class", "0"], "at least 1"),
                      (["--layer", "layer9"], "no CBAM spatial gate or self-attention layer 'layer9'")):
        assert main(["faithfulness", str(tmp_path), "--model", "tiny_resnet18", *args]) == 2
        err = capsys.readouterr().err
        assert msg in err and err.count("\n") == 1
    assert main(["faithfulness", str(tmp_path / "nope"), "--model", "tiny_resnet18"]) == 2
    assert "not a directory" in capsys.readouterr().err


def test_an_unreadable_image_is_reported_and_skipped(tiny_env, tmp_path, capsys):
    noise_image(64, 64).save(tmp_path / "good.png")
    (tmp_path / "bad.png").write_bytes(b"not an image")
    assert main(["faithfulness", str(tmp_path), "--model", "tiny_se_resnet18", "--json", "--quiet"]) == 1
    captured = capsys.readouterr()
    assert json.loads(captured.out)["images"] == 1 and "bad.png: not a readable image" in captured.err


def test_the_docs_state_the_measured_figures():
    """docs/faithfulness.md's table against the JSON of the runs."""
    root = Path(__file__).resolve().parent.parent
    runs = [json.loads(f.read_text()) for f in sorted((root / "docs" / "faithfulness").glob("*.json"))]
    measured = {(r["model"], m["layer"]): m for r in runs for m in r["maps"].values()}
    docs = re.findall(r"^\| `(\w+)` \| [\w -]+ \| `([\w.]+)` \(\d+×\d+\) \| ([\d.]+) \| ([\d.]+) \| (\d+)% "
                      r"\| (-?[\d.]+)[^|]*\| (-?[\d.]+)", (root / "docs" / "faithfulness.md").read_text(), flags=re.M)
    assert {(model, layer) for model, layer, *_ in docs} == set(measured)
    for model, layer, a, r, below, rho4, rho34 in docs:
        m = measured[model, layer]
        assert (float(a), float(r), int(below)) == (round(m["auc"], 3), round(m["auc_random"], 3),
                                                    round(100 * m["below_random"]))
        assert (float(rho4), float(rho34)) == tuple(round(m["spearman"][k]["mean"], 2) for k in ("layer4", "layer3-4"))
