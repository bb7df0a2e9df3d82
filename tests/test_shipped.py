"""The shipped weights: what users see. Each of the six models is in ``weights/``,
verified on load, small, as accurate as its metadata, the README and docs/models.md say, and the SE
profile the app draws is there too."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
import torch

import attnviz
from attnviz.kinds import KINDS
from attnviz.models import REGISTRY, SHIPPED, attention_heads
from attnviz.profile import SEProfile, profile_path
from attnviz.training.evaluate import model_targets, predict
from attnviz.training.recipe import IMAGENETTE_NAMES, Recipe
from attnviz.weights import SHIPPED_DIR, load_pair

from .conftest import page_top5s

ROOT = Path(__file__).resolve().parent.parent
VAL = ROOT.parent / "shared" / "data" / "imagenette2-224" / "val"
MAX_FILE_BYTES = 12 * 1000 * 1000  # the target: each weights file <= 12 MB


@pytest.fixture(scope="module")
def shipped():
    """name -> (model, meta) of every shipped pair, loaded and verified."""
    return {name: load_pair(SHIPPED_DIR / f"{name}.safetensors") for name in SHIPPED}


def test_the_six_models_ship_verified_small_and_accurate(shipped):
    for name, (model, meta) in shipped.items():
        assert meta.arch == name and meta.width == 32 and meta.input_size == 224
        assert meta.classes == list(IMAGENETTE_NAMES.values())
        assert meta.class_ids == list(IMAGENETTE_NAMES)
        assert (SHIPPED_DIR / f"{name}.safetensors").stat().st_size <= MAX_FILE_BYTES
        assert meta.metrics["val_images"] == 3925 and meta.metrics["eval_size"] == 224
        # The project's target (the README's results; the next test checks the figure).
        assert meta.metrics["val_top1"] >= 0.91, f"{name}: {meta.metrics['val_top1']}"
        assert not model.training
    # Same recipe for all six: only the architecture differs (and how fast it ran:
    # minutes, threads, which modules ran compiled, on which CPU in which precision; and the seed, which
    # docs/training.md states).
    how = ("train_minutes", "threads", "finetuned_from", "compiled_modules", "seed", "cpu", "native_bf16", "precision")
    recipes = [{k: v for k, v in meta.training.items() if k not in how} for _, meta in shipped.values()]
    assert all(r == recipes[0] for r in recipes)
    # ... and it is the default one, so `attnviz train` with no recipe flags but --seed reproduces them.
    for _, meta in shipped.values():
        default = Recipe(seed=meta.training["seed"]).to_json()
        assert {k: meta.training.get(k, v) for k, v in default.items()} == default  # older files lack later fields
    assert set(attnviz.available_models()) >= set(SHIPPED)


def _readme_results() -> dict[str, float]:
    """Model -> top-1 (%) as the README's results table states it."""
    text = (ROOT / "README.md").read_text()
    rows = re.findall(r"^\| `(\w+)` \| ([\d.]+) % \|", text, flags=re.M)
    return {name: float(top1) for name, top1 in rows}


def test_readme_table_states_the_measured_accuracy(shipped):
    stated = _readme_results()
    assert set(stated) == set(SHIPPED)
    for name, (_, meta) in shipped.items():
        assert stated[name] == pytest.approx(100 * meta.metrics["val_top1"], abs=0.005), name


# Every val image through all six models: batched, the split decoded once, and still
# more than the suite-wide 300 s on a busy 2-core machine (334 s was seen). Its own
# limit, so that a loaded machine makes it slow, not failed.
@pytest.mark.timeout(1200)
@pytest.mark.skipif(not VAL.is_dir(), reason="needs ../shared/data/imagenette2-224 beside the repository")
def test_evaluate_on_the_val_split_reproduces_the_stated_accuracy(shipped):
    from attnviz.training.data import decode_folder

    torch.manual_seed(0)
    data = decode_folder(VAL, 224)
    for name, (model, meta) in shipped.items():
        target = model_targets(meta, data)
        top1 = (predict(model, data, meta.mean, meta.std) == target).float().mean().item()
        assert round(top1, 4) == pytest.approx(meta.metrics["val_top1"], abs=1e-4), name


def test_the_se_profile_of_the_val_split_ships_with_the_se_model(shipped):
    prof = SEProfile.from_json(profile_path(SHIPPED_DIR / "se_resnet18.safetensors"))
    model, meta = shipped["se_resnet18"]
    blocks = [p for p, kind in attnviz.attention_modules(model).items() if kind == "se"]
    assert list(prof.means) == blocks and prof.images == 3925
    assert prof.classes == meta.classes
    for block, rows in prof.means.items():
        assert len(rows) == 10 and all(0 <= v <= 1 for row in rows for v in row)
        assert 0 <= prof.specificity[block] <= 1


def test_the_app_opens_on_the_shipped_models_with_their_true_predictions(monkeypatch):
    from streamlit.testing.v1 import AppTest

    from attnviz.app.service import sample_images
    from attnviz.weights import ENV_VAR

    monkeypatch.delenv(ENV_VAR, raising=False)
    at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=180)
    at.run()
    assert not at.exception and not at.error
    sample = sample_images()[at.selectbox(key="sample").value]
    top5s = page_top5s(at)
    assert len(top5s) == len(SHIPPED)
    for name, shown in zip(sorted(SHIPPED), top5s):  # side by side, in name order
        expected = attnviz.analyze(sample, attnviz.load_model(name)).top_k(5)
        assert [c for c, _ in shown] == [c for c, _ in expected], name
        np.testing.assert_allclose([p for _, p in shown], [p for _, p in expected], rtol=1e-6)


# Issue 18's bounds on every head of every self-attention layer, over the val split.
MAX_ENTROPY, MIN_QUERY_DEPENDENCE, MIN_IMAGE_DEPENDENCE = 0.90, 0.25, 0.10


def _within_bounds(heads) -> None:
    for h in heads:
        assert h["entropy"] <= MAX_ENTROPY and h["query_dependence"] >= MIN_QUERY_DEPENDENCE
        assert h["image_dependence"] >= MIN_IMAGE_DEPENDENCE


ATTENDING = tuple(name for name in SHIPPED if any(KINDS[k].matrix for k in REGISTRY[name].kinds))
"""The shipped models whose attention has query maps: self-attention, and axial attention's
composed maps (its steps are recorded too, but the bounds are on what a query pixel sees)."""


def _bounded(meta) -> dict[str, list]:
    """The recorded figures of the maps the bounds apply to: each attention layer's map
    (``layer2.1.attn.softmax``; an axial layer's composed ``layer1.1.axial``), not its steps."""
    recorded = meta.metrics["attention_quality"]
    return {layer: heads for layer, heads in recorded.items() if layer.removesuffix(".softmax") in meta.attention_heads}


def test_attention_quality_on_the_val_split_is_recorded_within_bounds_and_in_the_docs(shipped):
    # docs/models.md's table: model, layer, head, then the three figures to 3 decimals.
    text = (ROOT / "docs" / "models.md").read_text()
    rows = re.findall(r"^\| `(\w+)` \| `(layer[\w.]+)` \| (\d+) \| ([\d.]+) \| ([\d.]+) \| ([\d.]+) \|",
                      text, flags=re.M)
    stated = {(name, layer, int(i)): tuple(map(float, v)) for name, layer, i, *v in rows}
    figures = ("entropy", "query_dependence", "image_dependence")
    expected = {}
    for name in ATTENDING:
        model, meta = shipped[name]
        bounded = _bounded(meta)
        assert [layer.removesuffix(".softmax") for layer in bounded] == list(meta.attention_heads) \
            == list(attention_heads(model)), name
        for layer, heads in bounded.items():
            assert len(heads) == meta.attention_heads[layer.removesuffix(".softmax")]
            _within_bounds(heads)
            short = layer.removesuffix(".softmax").rsplit(".", 1)[0]  # layer2.1.attn -> layer2.1
            expected.update({(name, short, i): tuple(round(h[f], 3) for f in figures) for i, h in enumerate(heads)})
    assert stated == expected


@pytest.mark.skipif(not VAL.is_dir(), reason="needs ../shared/data/imagenette2-224 beside the repository")
def test_the_shipped_attention_attends_on_a_handful_of_val_images(shipped):
    from attnviz.attention_stats import measure
    from attnviz.image import list_images

    images = list_images(VAL, limit=20)  # 2 per class: the folder is sorted by class
    for name in ATTENDING:
        model, meta = shipped[name]
        result = measure(images, model).result()
        layers = [layer for layer in result if layer.removesuffix(".softmax") in meta.attention_heads]
        assert len(layers) == len(meta.attention_heads), name
        for layer in layers:
            _within_bounds([h.to_json() for h in result[layer]])
