"""Training, evaluation and the SE profile on a tiny generated ImageFolder."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image

import attnviz
from attnviz.cli import main
from attnviz.image import normalize
from attnviz.models import build_model
from attnviz.profile import SEProfile
from attnviz.training.compiled import compiled
from attnviz.training.data import crop_grid, random_flip
from attnviz.training.evaluate import paired_test
from attnviz.training.loop import train
from attnviz.training.profile import class_specificity
from attnviz.training.recipe import Recipe


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    """3 classes x 8 images, each class a different dominant colour, some greyscale."""
    root = tmp_path_factory.mktemp("imagefolder")
    rng = np.random.default_rng(0)
    for k, wnid in enumerate(["n01440764", "n02102040", "n02979186"]):
        d = root / wnid
        d.mkdir()
        for i in range(8):
            a = rng.integers(0, 80, (40, 48, 3), dtype=np.uint8)
            a[..., k] += 150
            im = Image.fromarray(a)
            (im.convert("L") if i == 0 else im).save(d / f"{i}.jpg" if i % 2 else d / f"{i}.png")
    return root


def tiny_recipe(epochs: int = 2, finetune_epochs: int = 1) -> Recipe:
    return Recipe(width=8, batch_size=8, phases=[(epochs, 32)], decode_size=48, eval_size=48,
                  finetune_epochs=finetune_epochs)


def assert_same_weights(path_a, path_b):
    a, _ = attnviz.load_pair(path_a)
    b, _ = attnviz.load_pair(path_b)
    for (k, va), vb in zip(a.state_dict().items(), b.state_dict().values()):
        torch.testing.assert_close(va, vb, msg=k)


def test_one_epoch_writes_a_loadable_pair_with_metadata(folder, tmp_path, monkeypatch):
    path = train("se_resnet18", folder, folder, tmp_path, recipe=tiny_recipe(1), log=lambda m: None)
    monkeypatch.setenv("ATTNVIZ_WEIGHTS_DIR", str(tmp_path))
    model = attnviz.load_model("se_resnet18")
    meta = model.attnviz_meta
    assert path == tmp_path / "se_resnet18.safetensors"
    assert meta.classes == ["tench", "English springer", "cassette player"]
    assert meta.class_ids == ["n01440764", "n02102040", "n02979186"] and meta.input_size == 48
    assert 0 <= meta.metrics["val_top1"] <= 1 and meta.metrics["val_images"] == 24
    assert meta.training["epochs"] == 2 and meta.training["finetune_epochs"] == 1  # 1 of crops, 1 whole
    assert meta.dataset["train_images"] == 24
    a = attnviz.analyze(next(folder.glob("*/1.jpg")), model)
    assert len(a.se) == 8


def test_the_resnet_c_and_d_backbone_is_trained_recorded_and_loaded_as_built(folder, tmp_path, monkeypatch, capsys):
    assert main(["train", str(folder), "--arch", "sa_resnet18", "--out", str(tmp_path), "--epochs", "1",
                 "--crop-size", "32", "--eval-size", "48", "--batch-size", "8", "--width", "8",
                 "--recipe", "decode_size=48", "--recipe", "stem_type=deep", "--recipe", "avg_down=true"]) == 0
    meta = json.loads((tmp_path / "sa_resnet18.json").read_text())
    assert meta["backbone"] == {"stem_type": "deep", "avg_down": True}
    assert meta["training"]["stem_type"] == "deep" and meta["training"]["avg_down"] is True
    monkeypatch.setenv("ATTNVIZ_WEIGHTS_DIR", str(tmp_path))
    model = attnviz.load_model("sa_resnet18")
    # ResNet-C: three 3x3 convolutions of width/2, width/2, width; ResNet-D: average, then a stride-1 1x1
    convs = [m for m in model.conv1 if isinstance(m, torch.nn.Conv2d)]
    assert [(c.kernel_size, c.stride, c.out_channels) for c in convs] == [((3, 3), (2, 2), 4), ((3, 3), (1, 1), 4),
                                                                         ((3, 3), (1, 1), 8)]
    for stage in (model.layer2, model.layer3, model.layer4):
        pool, conv, _ = stage[0].downsample
        assert isinstance(pool, torch.nn.AvgPool2d) and conv.stride == (1, 1)
    plain = build_model("sa_resnet18", width=8, num_classes=3)
    assert isinstance(plain.conv1, torch.nn.Conv2d) and plain.layer2[0].downsample[0].stride == (2, 2)
    a = attnviz.analyze(next(folder.glob("*/1.jpg")), model)  # same attention places, same grids
    assert a.self_attn_grid == {"layer2.1.attn.softmax": (6, 6), "layer3.1.attn.softmax": (3, 3)}
    # A backbone this attnviz does not build is refused in one line, before any weights are read.
    meta["backbone"] = {"stem_type": "tiered"}
    (tmp_path / "sa_resnet18.json").write_text(json.dumps(meta))
    with pytest.raises(attnviz.WeightsError, match="backbone .* is not one this attnviz builds"):
        attnviz.load_model("sa_resnet18")


@pytest.fixture(scope="module")
def full_run(folder, tmp_path_factory):
    """2 epochs of crops + 1 fine-tune epoch, uninterrupted."""
    out = tmp_path_factory.mktemp("full")
    return train("cbam_resnet18", folder, None, out, recipe=tiny_recipe(), log=lambda m: None)


@pytest.mark.parametrize("stop_after", [1, 2])  # 2: stopped where the fine-tune begins
def test_resume_continues_to_the_same_weights(folder, tmp_path, full_run, stop_after):
    quiet = {"log": lambda m: None}
    part = tmp_path / "part"
    assert train("cbam_resnet18", folder, None, part, recipe=tiny_recipe(), stop_after=stop_after, **quiet) is None
    ckpt = torch.load(part / "cbam_resnet18.ckpt.pt", weights_only=True)
    assert ckpt["epoch"] == stop_after
    resumed = train("cbam_resnet18", folder, None, part, recipe=tiny_recipe(), resume=True, **quiet)
    assert_same_weights(full_run, resumed)


def test_mixup_cutmix_changes_training_and_resumes_to_the_same_weights(folder, tmp_path, full_run):
    quiet = {"log": lambda m: None}
    mixed = tiny_recipe()
    mixed.mixup_alpha, mixed.cutmix_alpha = 0.2, 1.0
    whole = train("cbam_resnet18", folder, None, tmp_path / "whole", recipe=mixed, **quiet)
    part = tmp_path / "part"
    assert train("cbam_resnet18", folder, None, part, recipe=mixed, stop_after=1, **quiet) is None
    assert_same_weights(whole, train("cbam_resnet18", folder, None, part, recipe=mixed, resume=True, **quiet))
    with pytest.raises(AssertionError):  # the mixed batches are not the plain recipe's
        assert_same_weights(full_run, whole)
    training = json.loads(whole.with_suffix(".json").read_text())["training"]
    assert training["mixup_alpha"] == 0.2 and training["cutmix_alpha"] == 1.0


def test_finetune_from_a_pair_gives_the_weights_of_one_uninterrupted_run(folder, tmp_path, full_run):
    quiet = {"log": lambda m: None}
    main_only = train("cbam_resnet18", folder, None, tmp_path / "main", recipe=tiny_recipe(finetune_epochs=0), **quiet)
    tuned = train("cbam_resnet18", folder, None, tmp_path / "tuned", recipe=tiny_recipe(), finetune_from=main_only,
                  **quiet)
    assert_same_weights(full_run, tuned)
    training = json.loads(tuned.with_suffix(".json").read_text())["training"]
    assert training["epochs"] == 3 and training["finetuned_from"]["file"] == "cbam_resnet18.safetensors"
    with pytest.raises(ValueError, match="differing: phases"):
        train("cbam_resnet18", folder, None, tmp_path / "x", recipe=tiny_recipe(epochs=3), finetune_from=main_only,
              **quiet)
    with pytest.raises(ValueError, match="it is a cbam_resnet18"):
        train("se_resnet18", folder, None, tmp_path / "x", recipe=tiny_recipe(), finetune_from=main_only, **quiet)


def test_cli_train_evaluate_and_profile(folder, tmp_path, monkeypatch, capsys):
    out = tmp_path / "w"
    assert main(["train", str(folder), "--arch", "se_resnet18", "--out", str(out), "--name", "tiny_se",
                 "--epochs", "1", "--crop-size", "32", "--eval-size", "48", "--width", "8", "--batch-size", "8",
                 "--cache-dir", str(tmp_path / "cache")]) == 0
    monkeypatch.setenv("ATTNVIZ_WEIGHTS_DIR", str(out))
    capsys.readouterr()
    assert main(["evaluate", str(folder), "--model", "tiny_se"]) == 0
    printed = capsys.readouterr().out
    assert "tiny_se: top-1" in printed and "on 24 images at 48px" in printed
    assert main(["evaluate", str(folder), "--model", "tiny_se", "--against", "tiny_se"]) == 0
    printed = capsys.readouterr().out
    assert "A tiny_se: top-1" in printed and "B tiny_se: top-1" in printed and "(24 images)" in printed
    assert "only A right: 0, only B right: 0; McNemar's exact p = 1: indistinguishable" in printed
    assert main(["profile", str(folder), "--model", "tiny_se", "--out", str(out), "--no-png"]) == 0
    printed = capsys.readouterr().out
    assert "layer4.1.se.gate" in printed
    prof = SEProfile.from_json(out / "tiny_se.profile.json")
    assert prof.images == 24 and len(prof.classes) == 3 and len(prof.means) == 8
    assert all(0 <= s <= 1 for s in prof.specificity.values())
    assert len(prof.means["layer1.0.se.gate"][0]) == 8
    rows = (out / "tiny_se.profile.csv").read_text().splitlines()
    assert rows[0] == "block,class,channel,mean_gate" and len(rows) == 1 + 3 * sum(8 * 2**(i // 2) for i in range(8))
    assert json.loads((out / "tiny_se.json").read_text())["metrics"] == {}


def test_paired_test_is_mcnemars_exact_test_on_the_images_only_one_model_gets_right():
    a = torch.tensor([True] * 50 + [True] * 10 + [False] * 2 + [False] * 8)
    b = torch.tensor([True] * 50 + [False] * 10 + [True] * 2 + [False] * 8)
    t = paired_test(a, b)
    assert (t.images, t.only_a, t.only_b) == (70, 10, 2)
    assert (t.top1_a, t.top1_b) == (pytest.approx(60 / 70), pytest.approx(52 / 70))
    # two-sided exact binomial: 2 * P(X <= 2), X ~ Bin(12, 1/2)
    assert t.p_value == pytest.approx(2 * (1 + 12 + 66) / 2**12) and t.verdict() == "A better"
    assert paired_test(b, a).verdict() == "B better"
    assert paired_test(a, a).p_value == 1.0 and paired_test(a, a).verdict() == "indistinguishable"
    with pytest.raises(ValueError, match="not the same images"):
        paired_test(a, b[:-1])


def test_profile_refuses_a_model_without_se(folder, tmp_path, tiny_env, capsys):
    assert main(["profile", str(folder), "--model", "tiny_cbam_resnet18", "--out", str(tmp_path), "--no-png"]) == 2
    assert "no SE blocks" in capsys.readouterr().err


def test_class_specificity_is_zero_for_shared_and_one_for_class_only_gates():
    labels = np.array([0, 0, 1, 1])
    # Every image has the same gates: no class differs from another.
    same = np.tile(np.random.default_rng(0).random(5), (4, 1))
    assert class_specificity(same, labels) == 0.0
    # Gates that vary from image to image but whose class means agree: still 0.
    noisy = same + np.array([[0.1], [-0.1], [0.1], [-0.1]])
    assert class_specificity(noisy, labels) == pytest.approx(0.0, abs=1e-12)
    by_class = np.array([[0.1, 0.2], [0.1, 0.2], [0.9, 0.8], [0.9, 0.8]])
    assert class_specificity(by_class, labels) == pytest.approx(1.0)


def test_cli_train_phases_set_the_progressive_schedule(folder, tmp_path, capsys):
    out = tmp_path / "w"
    assert main(["train", str(folder), "--arch", "resnet18", "--out", str(out), "--phases", "1x32,1x40",
                 "--eval-size", "48", "--width", "8", "--batch-size", "8", "--cache-dir", str(tmp_path / "cache")]) == 0
    training = json.loads((out / "resnet18.json").read_text())["training"]
    assert training["phases"] == [[1, 32], [1, 40]] and training["epochs"] == 3  # + 1 fine-tune epoch
    for bad in ("16", "16x", "0x112", "16x112;5x192", "5x9999"):
        with pytest.raises(SystemExit) as exc:
            main(["train", str(folder), "--arch", "resnet18", "--out", str(out), "--phases", bad])
        assert exc.value.code == 2
        assert "expected EPOCHSxSIZE" in capsys.readouterr().err


def test_cli_val_every_sets_how_often_val_top1_is_logged(folder, tmp_path, capsys):
    args = ["train", str(folder), "--arch", "resnet18", "--val-dir", str(folder), "--phases", "2x32",
            "--eval-size", "48", "--width", "8", "--batch-size", "8", "--cache-dir", str(tmp_path / "cache")]
    logged = {}
    for every in ("1", "0"):
        capsys.readouterr()
        assert main([*args, "--out", str(tmp_path / every), "--val-every", every]) == 0
        lines = capsys.readouterr().out.splitlines()
        logged[every] = [line for line in lines if " epoch " in line and "val-top1" in line]
        assert any(line.startswith("resnet18 val top-1 ") for line in lines)  # the final measure, always
    # 3 epochs (2 of crops, 1 fine-tune): mid-training after the first two, never after the last.
    assert [line.split()[2] for line in logged["1"]] == ["1/3", "2/3"] and logged["0"] == []
    same = [(tmp_path / every / "resnet18.safetensors").read_bytes() for every in ("1", "0")]
    assert same[0] == same[1]  # measuring does not change training


def test_random_flip_mirrors_some_images_whole_and_leaves_the_rest():
    images = torch.randint(0, 256, (32, 3, 5, 7), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    out = random_flip(images, torch.Generator().manual_seed(1))
    assert out.dtype == torch.float32 and out.shape == images.shape
    kept = [torch.equal(o, i.float()) for o, i in zip(out, images)]
    mirrored = [torch.equal(o, i.float().flip(-1)) for o, i in zip(out, images)]
    assert all(k != m for k, m in zip(kept, mirrored))  # each image one or the other
    assert 0 < sum(mirrored) < 32


@pytest.mark.parametrize("size", [32, 112, 160, 192, 224])
def test_crop_grid_is_affine_grid_bit_for_bit(size):
    g = torch.Generator().manual_seed(size)
    sx, sy = torch.rand(16, generator=g) * 2 - 1, torch.rand(16, generator=g)
    tx, ty = torch.rand(16, generator=g) - 0.5, torch.rand(16, generator=g) - 0.5
    theta = torch.zeros(16, 2, 3)
    theta[:, 0, 0], theta[:, 0, 2], theta[:, 1, 1], theta[:, 1, 2] = sx, tx, sy, ty
    expected = torch.nn.functional.affine_grid(theta, [16, 3, size, size], align_corners=False)
    assert torch.equal(crop_grid(sx, tx, sy, ty, size), expected)


def test_normalize_writes_the_same_values_in_the_layout_asked_for():
    batch = torch.randint(0, 256, (4, 3, 9, 7), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    mean, std = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
    m, s = torch.tensor(mean).view(1, 3, 1, 1) * 255, torch.tensor(std).view(1, 3, 1, 1) * 255
    out = normalize(batch, mean, std, torch.channels_last)
    assert out.is_contiguous(memory_format=torch.channels_last) and out.dtype == torch.float32
    assert torch.equal(out, (batch.float() - m) / s) and torch.equal(normalize(batch.float(), mean, std), out)


def test_compiled_swaps_in_compiled_cbam_forwards_and_restores_them(monkeypatch):
    model = build_model("cbam_resnet18", width=8)
    with compiled(model) as names:
        assert names == [f"layer{s}.{b}.cbam" for s in range(1, 5) for b in range(2)]
        assert all("forward" in vars(model.get_submodule(n)) for n in names)
    assert not any("forward" in vars(m) for m in model.modules())  # the class's forward again
    monkeypatch.setenv("CXX", "no-such-compiler")
    with compiled(model) as names:
        assert names == [] and not any("forward" in vars(m) for m in model.modules())


def test_cli_trains_the_axial_model_and_measures_its_steps_and_composed_maps(folder, tmp_path, monkeypatch):
    # axial_resnet18 ships no weights yet: it is trained like the others (here 1 tiny epoch).
    out = tmp_path / "w"
    assert main(["train", str(folder), "--arch", "axial_resnet18", "--out", str(out), "--name", "tiny_axial",
                 "--epochs", "1", "--crop-size", "32", "--eval-size", "48", "--width", "8", "--batch-size", "8",
                 "--val-dir", str(folder), "--cache-dir", str(tmp_path / "cache")]) == 0
    monkeypatch.setenv("ATTNVIZ_WEIGHTS_DIR", str(out))
    model = attnviz.load_model("tiny_axial")
    meta = model.attnviz_meta
    assert meta.arch == "axial_resnet18"
    assert meta.attention_heads == {"layer1.1.axial": 1, "layer2.1.axial": 2, "layer3.1.axial": 4}
    layers = ["layer1.1.axial", "layer2.1.axial", "layer3.1.axial"]
    steps = [f"{layer}.{axis}.softmax" for layer in layers for axis in ("height", "width")]
    assert set(meta.metrics["attention_quality"]) == {*layers, *steps}
    a = attnviz.analyze(next(folder.glob("*/1.jpg")), model)
    assert list(a.self_attn) == layers and a.self_attn_grid["layer1.1.axial"] == (12, 12)
