"""Grad-CAM (attnviz.cam): the paper's map, computed by pytorch-grad-cam on a private copy."""

import copy
import subprocess
import sys
import threading
from pathlib import Path

import pytest
import torch

import attnviz
from attnviz import figures
from attnviz.analysis import analyze, model_input
from attnviz.cam import CAM_LAYER, cam_maps, grad_cam, private_copy
from attnviz.models import ARCHITECTURES

from .conftest import CLASSES, noise_image, tiny_meta, tiny_model

SIZE = 128  # a 4x4 grid at layer4 (stride 32)
SAMPLE = Path(attnviz.__file__).parent / "samples" / "temple.jpg"


def reference_cam(model: torch.nn.Module, x: torch.Tensor, cls: int) -> torch.Tensor:
    """Grad-CAM as the paper defines it, by hand (the test's oracle): ReLU of the layer4
    feature maps weighted by the spatial mean of the class logit's gradient, min-max scaled."""
    model = copy.deepcopy(model)
    feats = {}
    handle = model.layer4.register_forward_hook(lambda m, i, o: feats.__setitem__("a", o))
    try:
        with torch.enable_grad():
            y = model(x)
            (g,) = torch.autograd.grad(y[0, cls], feats["a"])
    finally:
        handle.remove()
    a, g = feats["a"][0].detach(), g[0]
    cam = torch.relu((g.mean((1, 2))[:, None, None] * a).sum(0))
    cam = cam - cam.min()
    return cam / (cam.max() + 1e-7)


def _hooks(model: torch.nn.Module) -> int:
    return sum(len(m._forward_hooks) + len(m._forward_pre_hooks) + len(m._backward_hooks)
               + len(m._backward_pre_hooks) for m in model.modules())


def _snapshot(model: torch.nn.Module) -> dict:
    return {k: (v.clone(), v._version) for k, v in model.state_dict(keep_vars=True).items()}


def _assert_unchanged(model: torch.nn.Module, before: dict, training: bool = False) -> None:
    after = model.state_dict(keep_vars=True)
    assert after.keys() == before.keys()
    for k, (v, version) in before.items():
        assert torch.equal(after[k], v) and after[k]._version == version, k
    assert _hooks(model) == 0
    assert all(p.grad is None and p.requires_grad for p in model.parameters())
    assert all(m.training == training for m in model.modules())


@pytest.mark.parametrize("arch", ARCHITECTURES)
def test_grad_cam_is_the_papers_map_for_the_top_class_and_a_chosen_one(arch):
    model = tiny_model(arch)
    model.attnviz_meta = tiny_meta(arch)
    img = noise_image(150, 100, seed=3)
    _, _, _, _, _, x = model_input(img, model, SIZE)
    probs = analyze(img, model, size=SIZE).probs
    top = grad_cam(img, model, size=SIZE)
    assert top.map.shape == (SIZE // 32, SIZE // 32) and top.layer == CAM_LAYER
    assert top.target == int(probs.argmax()) and top.class_name == CLASSES[top.target]
    assert top.probability == pytest.approx(float(probs[top.target]), abs=1e-5)
    assert torch.allclose(top.map, reference_cam(model, x, top.target), atol=1e-5)
    assert 0 <= float(top.map.min()) and float(top.map.max()) <= 1
    other = (top.target + 1) % len(CLASSES)
    chosen = grad_cam(img, model, CLASSES[other], size=SIZE)
    assert chosen.target == other and chosen.class_name == CLASSES[other]
    assert torch.allclose(chosen.map, reference_cam(model, x, other), atol=1e-5)
    assert torch.equal(grad_cam(img, model, other, size=SIZE).map, chosen.map)  # by index, the same


def test_the_shared_model_is_unchanged_no_hook_no_grad_also_after_an_error():
    model = tiny_model("cbam_resnet18")
    model.attnviz_meta = tiny_meta("cbam_resnet18")
    before = _snapshot(model)
    img = noise_image(64, 64)
    rng = torch.random.get_rng_state()
    grad_cam(img, model, size=SIZE)
    _assert_unchanged(model, before)
    assert torch.equal(torch.random.get_rng_state(), rng)  # the private copy's initialisation is not the caller's
    with pytest.raises(ValueError, match="out of range: the model has 3 classes"):
        grad_cam(img, model, 3, size=SIZE)
    with pytest.raises(KeyError, match="unknown class 'zebra'"):
        grad_cam(img, model, "zebra", size=SIZE)
    with pytest.raises(KeyError, match="its stages are: layer1, layer2, layer3, layer4"):
        grad_cam(img, model, layer="layer9", size=SIZE)
    _assert_unchanged(model, before)
    model.train()  # refused, and not switched to eval behind the caller's back
    with pytest.raises(ValueError, match="training mode"):
        grad_cam(img, model, size=SIZE)
    _assert_unchanged(model, before, training=True)


def test_inside_inference_mode_and_a_model_without_metadata():
    model = tiny_model("se_resnet18")  # no attnviz_meta: deep-copied, without its hooks
    x = model_input(noise_image(64, 64), model, SIZE)[-1]
    seen = []
    handle = model.layer4.register_forward_hook(lambda m, i, o: seen.append(1))
    try:
        twin = private_copy(model)
        assert _hooks(twin) == 0 and not any(p.requires_grad for p in twin.parameters())
        with torch.inference_mode():
            maps, logits = cam_maps(model, x)
    finally:
        handle.remove()
    assert seen == []  # the caller's model never ran
    assert torch.allclose(maps[0], reference_cam(model, x, int(logits.argmax())), atol=1e-5)
    assert torch.allclose(logits, model(x), atol=1e-5)


def test_threads_sharing_one_model_each_get_their_own_map():
    model = tiny_model("sa_resnet18")
    model.attnviz_meta = tiny_meta("sa_resnet18")
    before = _snapshot(model)
    imgs = [noise_image(96, 96, seed=s) for s in range(3)]
    expected = [grad_cam(im, model, size=SIZE).map for im in imgs]
    expected_probs = [analyze(im, model, size=SIZE).probs for im in imgs]
    got, errors = {}, []
    start = threading.Barrier(4)

    def cam(i):
        try:
            start.wait()
            for _ in range(3):
                got.setdefault(i, []).append(grad_cam(imgs[i], model, size=SIZE).map)
        except Exception as exc:  # reported below
            errors.append(exc)

    def analyses():
        try:
            start.wait()
            for _ in range(6):
                for im, p in zip(imgs, expected_probs):
                    assert torch.allclose(analyze(im, model, size=SIZE).probs, p, atol=1e-6)
        except Exception as exc:
            errors.append(exc)

    threads = [threading.Thread(target=cam, args=(i,)) for i in range(3)] + [threading.Thread(target=analyses)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    for i, maps in got.items():
        assert len(maps) == 3 and all(torch.allclose(m, expected[i], atol=1e-6) for m in maps)
    _assert_unchanged(model, before)


def test_shipped_model_map_over_the_photo_on_a_relative_scale():
    model = attnviz.load_model("cbam_resnet18")
    before = _snapshot(model)
    a = analyze(SAMPLE, model)
    r = grad_cam(SAMPLE, model)
    _assert_unchanged(model, before)
    assert r.map.shape == (7, 7) and r.target == int(a.probs.argmax())
    assert float(r.map.max()) == pytest.approx(1, abs=1e-5) and float(r.map.min()) == 0  # min-max scaled
    x = model_input(SAMPLE, model)[-1]
    assert torch.allclose(r.map, reference_cam(model, x, r.target), atol=1e-4)
    fig = figures.overlay(a.display, r.map, "Grad-CAM", colorbar_title=figures.CAM_AXIS, extent=a.image_size)
    assert fig.data[0].colorbar.title.text == figures.CAM_AXIS and "min-max" in figures.CAM_AXIS
    assert (fig.data[0].zmin, fig.data[0].zmax) == (0, 1)


def test_the_core_imports_without_grad_cam_and_says_what_is_missing(tmp_path):
    code = ("import sys; sys.modules['pytorch_grad_cam'] = None\n"
            "import attnviz, attnviz.cam, attnviz.faithfulness, attnviz.cli\n"
            "from attnviz.cam import grad_cam\n"
            "from attnviz.models import build_model\n"
            "from PIL import Image\n"
            "try:\n    grad_cam(Image.new('RGB', (64, 64)), build_model('resnet18').eval())\n"
            "except ImportError as exc:\n    print('IMPORT-ERROR', exc)\n"
            "sys.exit(attnviz.cli.main(['faithfulness', sys.argv[1], '--model', 'resnet18']))\n")
    r = subprocess.run([sys.executable, "-c", code, str(tmp_path)], capture_output=True, text=True, timeout=240)
    assert "IMPORT-ERROR Grad-CAM needs the grad-cam package" in r.stdout
    assert r.returncode == 2 and r.stderr.strip().count("\n") == 0 and "grad-cam" in r.stderr
