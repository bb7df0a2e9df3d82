"""Shared fixtures: tiny random-weight models saved as real weights pairs, and images."""

from __future__ import annotations

import base64
import html
import json
import re

import numpy as np
import pytest
import torch
from hypothesis import Phase, settings
from PIL import Image

from attnviz.models import ARCHITECTURES, build_model
from attnviz.weights import ENV_VAR, WeightsMeta, save_pair

# For mutation testing (pyproject's [tool.mutmut]): a failing property test stops at its
# first counterexample instead of shrinking it, which would rerun models for minutes.
settings.register_profile("mutation", phases=[Phase.explicit, Phase.reuse, Phase.generate], database=None)

TINY_WIDTH = 8
TINY_SIZE = 64
CLASSES = ["alpha", "beta", "gamma"]


def tiny_model(arch: str, seed: int = 0) -> torch.nn.Module:
    torch.manual_seed(seed)
    model = build_model(arch, width=TINY_WIDTH, num_classes=len(CLASSES))
    # Random BN scales instead of the zero-init, so every branch and gate matters.
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            torch.nn.init.uniform_(m.weight, 0.5, 1.5)
            torch.nn.init.uniform_(m.bias, -0.2, 0.2)
    return model.eval()


def randomise_bn(model: torch.nn.Module, seed: int = 0) -> torch.nn.Module:
    """Random BN statistics and scales, so that no branch is a zero-init identity; eval mode."""
    torch.manual_seed(seed)
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            torch.nn.init.uniform_(m.weight, 0.5, 1.5)
            torch.nn.init.uniform_(m.bias, -0.2, 0.2)
            m.running_mean.uniform_(-0.1, 0.1)
            m.running_var.uniform_(0.5, 1.5)
    return model.eval()


def one_line(exc_info) -> str:
    """The message of a ``pytest.raises`` block's exception, checked to be one short line."""
    msg = str(exc_info.value)
    assert "\n" not in msg and len(msg) < 400
    return msg


def tiny_meta(arch: str, name: str | None = None) -> WeightsMeta:
    return WeightsMeta(name=name or f"tiny_{arch}", arch=arch, width=TINY_WIDTH, classes=list(CLASSES),
                       class_ids=[f"c{i}" for i in range(len(CLASSES))], input_size=TINY_SIZE)


@pytest.fixture(scope="session")
def tiny_weights_dir(tmp_path_factory) -> Path:  # noqa: F821
    d = tmp_path_factory.mktemp("weights")
    for arch in ARCHITECTURES:
        save_pair(tiny_model(arch), tiny_meta(arch), d)
    return d


@pytest.fixture
def tiny_env(tiny_weights_dir, monkeypatch):
    """``ATTNVIZ_WEIGHTS_DIR`` pointing at the tiny models."""
    monkeypatch.setenv(ENV_VAR, str(tiny_weights_dir))
    return tiny_weights_dir


def noise_image(width: int, height: int, seed: int = 0, mode: str = "RGB") -> Image.Image:
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 256, (height, width, 3), dtype=np.uint8), "RGB").convert(mode)


@pytest.fixture
def jpeg_file(tmp_path):
    p = tmp_path / "photo.jpg"
    noise_image(120, 80).save(p, "JPEG")
    return p


def plotly_array(value) -> np.ndarray:
    """An array from a plotly figure's JSON: a plain list, or plotly's typed-array
    encoding ``{"dtype": "f8", "bdata": base64, "shape": "h, w"}``."""
    if isinstance(value, dict):
        a = np.frombuffer(base64.b64decode(value["bdata"]), dtype=np.dtype(value["dtype"])).copy()
        shape = value.get("shape")
        return a.reshape([int(s) for s in str(shape).split(",")]) if shape else a
    return np.asarray(value, dtype=float)


def top5_pairs(text: str) -> list[tuple[str, float]]:
    """The (class, probability) pairs that ``figures.top_k_html`` carries in its data-top5
    attribute (single-quoted: a class name must not cut it short)."""
    return [(n, p) for n, p in json.loads(html.unescape(re.search(r"data-top5='([^']*)'", text)[1]))]


def page_top5s(at) -> list[list[tuple[str, float]]]:
    """Every top-5 an ``AppTest`` page shows, in page order, best first."""
    return [top5_pairs(h.proto.body) for h in at.get("html") if "data-top5=" in h.proto.body]


def handle_key(name: str) -> str:
    """The page's key of the model found on disk under ``name`` (widget keys derive from it)."""
    from attnviz.app.service import shared

    return shared()[0].handle(name).key


def upload_key(weights: bytes, meta: bytes) -> str:
    """The page's key of a weights pair uploaded in the sidebar."""
    import hashlib

    digest = hashlib.sha256(weights + b"\0" + meta).hexdigest()
    return f"upload-{digest[:16]}"
