"""Which models to measure: the installed ones, a forced folder, or random-init stand-ins."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import torch

import attnviz
from attnviz.models import REGISTRY, SHIPPED
from attnviz.weights import ENV_VAR, WeightsMeta, find_weights

RANDOM_WIDTH = 32
RANDOM_SIZE = 224
RANDOM_CLASSES = [f"class {i}" for i in range(10)]


@dataclass
class ModelSet:
    """Model names to measure; ``random`` when they are random-init stand-ins."""

    names: list[str]
    random: bool = False
    source: str = ""


def _pairs_in(directory: Path) -> list[str]:
    return sorted(p.stem for p in directory.glob("*.safetensors") if p.with_suffix(".json").is_file())


def write_random_models(directory: Path, seed: int = 0) -> list[str]:
    """Random-init models of every shipped architecture at width 32, 224 px, 10 classes, saved
    as weights pairs named after their architecture (so the app shows every view of the shipped models)."""
    torch.manual_seed(seed)
    for arch in SHIPPED:
        model = attnviz.build_model(arch, width=RANDOM_WIDTH, num_classes=len(RANDOM_CLASSES)).eval()
        meta = attnviz.WeightsMeta(name=arch, arch=arch, width=RANDOM_WIDTH, classes=list(RANDOM_CLASSES),
                                   input_size=RANDOM_SIZE)
        attnviz.save_pair(model, meta, directory)
    return _pairs_in(directory)


def choose_models(models_dir: Path | None, scratch: Path) -> ModelSet:
    """Point ``ATTNVIZ_WEIGHTS_DIR`` (inherited by the app and the CLI started later) at
    the models to measure: ``models_dir`` if given, else whatever is installed, else
    random-init models written under ``scratch``. Timings do not depend on weight values."""
    if models_dir is not None:
        names = _pairs_in(models_dir)
        if not names:
            raise SystemExit(f"benchmarks: error: no weights pairs (<name>.safetensors + .json) in {models_dir}")
        os.environ[ENV_VAR] = str(models_dir.resolve())
        return ModelSet(names, source=str(models_dir))
    names = attnviz.available_models()
    if names:
        return ModelSet(names, source="installed weights")
    directory = scratch / "random-weights"
    names = write_random_models(directory)
    os.environ[ENV_VAR] = str(directory)
    return ModelSet(names, random=True, source=f"random-init width {RANDOM_WIDTH}")


def self_attention_model(names: list[str]) -> str | None:
    """The first of ``names`` with self-attention: the one the app's self-attention view
    shows first (the app's own rule), read from the metadata without loading weights."""
    found = find_weights()
    for name in names:
        if "self_attn" in REGISTRY[WeightsMeta.from_json(found[name].with_suffix(".json")).arch].kinds:
            return name
    return None
