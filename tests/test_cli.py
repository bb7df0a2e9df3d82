import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest

import attnviz
from attnviz.cli import main

from .conftest import noise_image


def run_cli(*args, env_dir=None):
    env = {**os.environ}
    if env_dir is not None:
        env["ATTNVIZ_WEIGHTS_DIR"] = str(env_dir)
    return subprocess.run([sys.executable, "-m", "attnviz", *map(str, args)], capture_output=True, text=True,
                          env=env, timeout=240)


def test_models_lists_the_tiny_models_without_loading_them_and_counts_flops_when_asked(tiny_env, capsys,
                                                                                    monkeypatch):
    from attnviz import weights

    def no_loading(path):
        raise AssertionError("models loaded a model")

    with monkeypatch.context() as m:
        m.setattr(weights, "load_pair", no_loading)
        assert main(["models"]) == 0
    out = capsys.readouterr().out
    params = sum(p.numel() for p in attnviz.load_model("tiny_cbam_resnet18").parameters())
    assert f"tiny_cbam_resnet18 cbam_resnet18  width 8   {params / 1e6:.2f} M params" in out
    assert "GFLOPs" not in out
    assert main(["models", "--flops"]) == 0
    assert "GFLOPs at 64px" in capsys.readouterr().out


def test_weights_dir_option_adds_a_folder(tiny_weights_dir, monkeypatch, capsys):
    monkeypatch.setenv("ATTNVIZ_WEIGHTS_DIR", "")  # restored after the test, whatever main() sets
    assert main(["models", "--weights-dir", str(tiny_weights_dir)]) == 0
    assert "tiny_sa_resnet18" in capsys.readouterr().out


def test_explain_writes_npz_json_for_each_image(tiny_env, tmp_path, capsys):
    imgs = []
    for i, (w, h) in enumerate([(90, 60), (40, 120)]):
        p = tmp_path / f"img{i}.png"
        noise_image(w, h, seed=i).save(p)
        imgs.append(p)
    out = tmp_path / "out"
    assert main(["explain", *map(str, imgs), "--model", "tiny_sa_resnet18", "--out", str(out),
                 "--no-png", "--query", "10,20"]) == 0
    assert capsys.readouterr().out.strip() == f"wrote 4 files (JSON, NPZ) for 2 of 2 images to {out}"
    summary = json.loads((out / "img1.json").read_text())
    assert summary["image_size"] == [40, 120] and summary["model"] == "tiny_sa_resnet18"
    assert len(summary["top5"]) == 3 and summary["weights_sha256"]
    assert summary["layers"]["self_attn/layer2.1.attn.softmax"] == [2, 64, 64]
    with np.load(out / "img0.npz") as z:
        assert z["self_attn/layer3.1.attn.softmax"].shape == (4, 16, 16)
        assert np.allclose(z["self_attn/layer2.1.attn.softmax"].sum(-1), 1, atol=1e-5)


@pytest.mark.skipif(shutil.which("chromium") is None, reason="PNG export needs Chromium (CI installs it)")
def test_explain_writes_png_figures(tiny_env, tmp_path):
    p = tmp_path / "cat.jpg"
    noise_image(64, 48).save(p)
    out = tmp_path / "out"
    r = run_cli("explain", p, "--model", "tiny_cbam_resnet18", "--out", out, env_dir=tiny_env)
    assert r.returncode == 0, r.stderr
    pngs = sorted(f.name for f in out.glob("*.png"))
    assert {"cat_top5.png", "cat_cbam_spatial_layer1.0.png", "cat_cbam_channel_overview.png",
            "cat_gradcam_layer4.png"} <= set(pngs)
    assert all((out / f).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" for f in pngs)


def test_bad_images_fail_with_one_line_each_and_the_rest_is_done(tiny_env, tmp_path):
    good = tmp_path / "good.png"
    noise_image(32, 32).save(good)
    text = tmp_path / "text.jpg"
    text.write_text("I am not a JPEG")
    trunc = tmp_path / "trunc.jpg"
    noise_image(64, 64).save(trunc, "JPEG")
    trunc.write_bytes(trunc.read_bytes()[:300])
    out = tmp_path / "out"
    r = run_cli("explain", text, good, trunc, tmp_path / "missing.png", "--model", "tiny_se_resnet18",
                "--out", out, "--no-png", "--quiet", env_dir=tiny_env)
    assert r.returncode == 1
    assert "Traceback" not in r.stderr
    errors = [line for line in r.stderr.splitlines() if line.startswith("attnviz: error:")]
    assert len(errors) == 4, r.stderr  # three bad images, then the summary
    assert "text.jpg: not a readable image" in r.stderr and "trunc.jpg: not a readable image" in r.stderr
    assert "missing.png: no such file" in r.stderr and "3 of 4 images failed" in r.stderr
    assert (out / "good.npz").is_file() and (out / "good.json").is_file()
    assert not (out / "text.npz").exists()


def test_unknown_model_and_bad_query_are_one_line(tiny_env, tmp_path, jpeg_file):
    r = run_cli("explain", jpeg_file, "--model", "nope", "--out", tmp_path, env_dir=tiny_env)
    assert r.returncode == 2 and r.stderr.strip().count("\n") == 0
    assert "unknown model 'nope'" in r.stderr and "tiny_se_resnet18" in r.stderr
    r = run_cli("explain", jpeg_file, "--model", "tiny_sa_resnet18", "--out", tmp_path, "--query", "a,b",
                env_dir=tiny_env)
    assert r.returncode == 2 and "--query expects X,Y" in r.stderr and "Traceback" not in r.stderr
    r = run_cli("explain", jpeg_file, "--model", "tiny_sa_resnet18", "--out", tmp_path, "--query", "5000,1",
                "--no-png", env_dir=tiny_env)
    assert r.returncode == 1 and "outside the 120x80 image" in r.stderr


def test_an_unusable_output_directory_is_one_line(tiny_env, tmp_path, jpeg_file, capsys):
    blocker = tmp_path / "a_file"
    blocker.write_text("not a directory")
    status = main(["explain", str(jpeg_file), "--model", "tiny_sa_resnet18", "--out", str(blocker / "out"),
                   "--no-png", "--quiet"])
    err = capsys.readouterr().err
    assert status == 2 and err.startswith("attnviz: error: ") and err.count("\n") == 1
    assert "Traceback" not in err


def test_workers_write_the_same_outputs_and_still_report_bad_files(tiny_env, tmp_path, capsys):
    imgs = []
    for i in range(5):
        p = tmp_path / f"img{i}.png"
        noise_image(50 + 7 * i, 40 + 3 * i, seed=i).save(p)
        imgs.append(p)
    bad = tmp_path / "bad.jpg"
    bad.write_text("not an image")
    args = [*map(str, imgs), str(bad), "--model", "tiny_sa_resnet18", "--no-png", "--quiet"]
    assert main(["explain", *args, "--out", str(tmp_path / "one")]) == 1
    assert main(["explain", *args, "--out", str(tmp_path / "two"), "--workers", "3"]) == 1
    err = capsys.readouterr().err
    assert err.count("bad.jpg: not a readable image") == 2 and err.count("1 of 6 images failed") == 2
    for i in range(5):
        with np.load(tmp_path / "one" / f"img{i}.npz") as a, np.load(tmp_path / "two" / f"img{i}.npz") as b:
            assert a.files == b.files
            for k in a.files:
                np.testing.assert_allclose(a[k], b[k], rtol=1e-5, atol=1e-6)
    assert main(["explain", *args, "--out", str(tmp_path / "x"), "--workers", "0"]) == 2


def test_attention_stats_prints_the_figures_of_every_head(tiny_env, tmp_path, capsys):
    from attnviz.attention_stats import measure
    from attnviz.loading import load_model

    folder = tmp_path / "imgs"
    (folder / "a").mkdir(parents=True)
    (folder / "b").mkdir()
    files = []
    for i, (w, h) in enumerate([(90, 60), (40, 120), (64, 64)]):
        files.append(folder / ("a" if i < 2 else "b") / f"img{i}.png")
        noise_image(w, h, seed=i).save(files[-1])
    (folder / "notes.txt").write_text("not an image")  # skipped by suffix
    assert main(["attention-stats", str(folder), "--model", "tiny_sa_resnet18", "--json", "--quiet"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["images"] == 3 and report["size"] == 64 and report["skipped"] == 0
    assert {k: len(v) for k, v in report["layers"].items()} == {"layer2.1.attn.softmax": 2,
                                                                "layer3.1.attn.softmax": 4}
    # the same figures as the API's meter over the same images
    expected = measure(sorted(files), load_model("tiny_sa_resnet18")).result()
    for layer, heads in expected.items():
        for shown, q in zip(report["layers"][layer], heads):
            assert shown == pytest.approx(q.to_json())
            assert 0 <= q.entropy <= 1 and 0 <= q.query_dependence <= 1 and 0 <= q.image_dependence <= 1

    assert main(["attention-stats", str(folder), "--model", "tiny_sa_resnet18", "--limit", "2", "--quiet"]) == 0
    table = capsys.readouterr().out
    assert "over 2 images at 64px" in table
    assert sum(line.startswith("layer3.1.attn.softmax") for line in table.splitlines()) == 4


def test_attention_stats_refuses_what_it_cannot_measure(tiny_env, tmp_path, capsys):
    noise_image(32, 32).save(tmp_path / "one.png")
    (tmp_path / "broken.jpg").write_bytes(b"not a jpeg")
    assert main(["attention-stats", str(tmp_path), "--model", "tiny_se_resnet18"]) == 2
    assert capsys.readouterr().err.strip() == ("attnviz: error: tiny_se_resnet18 has no self-attention layer: "
                                                "nothing to measure")
    assert main(["attention-stats", str(tmp_path / "nope"), "--model", "tiny_sa_resnet18"]) == 2
    assert "not a directory" in capsys.readouterr().err
    # a broken image: one line for it, the others measured, exit status 1
    assert main(["attention-stats", str(tmp_path), "--model", "tiny_sa_resnet18", "--quiet"]) == 1
    captured = capsys.readouterr()
    assert "over 1 image at" in captured.out
    assert [line for line in captured.err.splitlines() if line.startswith("attnviz: error:")] == [
        line for line in captured.err.splitlines() if "broken.jpg" in line]
