"""Weights and their metadata: ``<name>.safetensors`` next to ``<name>.json``.

The JSON says how the model is built (architecture, width, classes), how its input
must be prepared (size, normalisation, squash), what it was trained on, how accurate
it measured, the sha256 of the weights file, and the heads of any self-attention layer.
Loading checks the hash, the architecture, every tensor name and shape, and those heads
against the metadata before anything is loaded; safetensors holds only tensors, so
nothing is ever unpickled.

Where weights are looked for: the shipped weights (``weights/`` at the repository's top,
``attnviz/shipped/`` inside an installed wheel, which carries them as package data), then
every folder in ``ATTNVIZ_WEIGHTS_DIR`` (``os.pathsep``-separated). A name found in a
user's folder shadows a shipped model of the same name.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file, save_file
from torch import nn

from .models import ARCHITECTURES, BACKBONE_OPTIONS, STEM_TYPES, attention_heads, build_model

ENV_VAR = "ATTNVIZ_WEIGHTS_DIR"
def _shipped_dir() -> Path:
    """The shipped weights: ``attnviz/shipped/`` in an installed package (the wheel maps the
    repository's top-level ``weights/`` there), else ``weights/`` beside the package (a
    source checkout, an editable install)."""
    installed = Path(__file__).resolve().parent / "shipped"
    return installed if installed.is_dir() else Path(__file__).resolve().parent.parent / "weights"


SHIPPED_DIR = _shipped_dir()
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class WeightsError(ValueError):
    """A weights pair that cannot be used; the message is one line for the user."""


@dataclass
class WeightsMeta:
    """Everything needed to rebuild a model and feed it correctly."""

    name: str
    arch: str
    width: int
    classes: list[str]
    class_ids: list[str] = field(default_factory=list)
    input_size: int = 224
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD
    resize: str = "squash"
    interpolation: str = "bilinear"  # of the squash: "bilinear" or "bicubic" (timm's models)
    dataset: dict[str, Any] = field(default_factory=dict)
    metrics: dict[str, Any] = field(default_factory=dict)
    training: dict[str, Any] = field(default_factory=dict)
    # Self-attention layer path -> heads (how the channels are split is in no tensor's shape).
    attention_heads: dict[str, int] = field(default_factory=dict)
    # How the backbone is built beyond the width: build_model's stem_type and avg_down ({}: torchvision's).
    backbone: dict[str, Any] = field(default_factory=dict)
    sha256: str = ""

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    def build(self) -> nn.Module:
        """A randomly initialised model of this architecture, built as the weights expect."""
        return build_model(self.arch, width=self.width, num_classes=self.num_classes, **self.backbone)

    @classmethod
    def from_json(cls, path: Path) -> WeightsMeta:
        try:
            raw = json.loads(path.read_text())
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise WeightsError(f"{path.name}: not readable JSON ({exc})") from None
        if not isinstance(raw, dict):
            raise WeightsError(f"{path.name}: expected a JSON object")
        known = set(cls.__dataclass_fields__)
        missing = [k for k in ("name", "arch", "width", "classes") if k not in raw]
        if missing:
            raise WeightsError(f"{path.name}: missing {', '.join(missing)}")
        try:
            meta = cls(**{k: v for k, v in raw.items() if k in known})
            meta.mean, meta.std = tuple(map(float, meta.mean)), tuple(map(float, meta.std))
            meta.width, meta.input_size = int(meta.width), int(meta.input_size)
        except (TypeError, ValueError) as exc:
            raise WeightsError(f"{path.name}: malformed metadata ({exc})") from None
        if meta.arch not in ARCHITECTURES:
            raise WeightsError(f"{path.name}: unknown architecture {meta.arch!r}; known: {', '.join(ARCHITECTURES)}")
        unknown = set(meta.backbone) - set(BACKBONE_OPTIONS) if isinstance(meta.backbone, dict) else {"(not an object)"}
        if unknown or meta.backbone.get("stem_type", "") not in STEM_TYPES:
            raise WeightsError(f"{path.name}: backbone {meta.backbone!r} is not one this attnviz builds "
                               f"(options: {', '.join(BACKBONE_OPTIONS)})")
        if len(meta.mean) != 3 or len(meta.std) != 3 or not meta.classes:
            raise WeightsError(f"{path.name}: mean and std need 3 values and classes at least one")
        return meta

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2) + "\n"


def sha256_of(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def weights_dirs() -> list[Path]:
    """Folders searched for weights, lowest priority first."""
    dirs = [SHIPPED_DIR]
    dirs += [Path(p).expanduser() for p in os.environ.get(ENV_VAR, "").split(os.pathsep) if p]
    return dirs


def find_weights() -> dict[str, Path]:
    """Model name -> path of its ``.safetensors``, for every complete pair found."""
    found: dict[str, Path] = {}
    for d in weights_dirs():
        if d.is_dir():
            for st in sorted(d.glob("*.safetensors")):
                if st.with_suffix(".json").is_file():
                    found[st.stem] = st
    return found


def check_state_dict(model: nn.Module, state: dict[str, torch.Tensor], source: str) -> None:
    """Refuse a state dict whose tensor names or shapes differ from ``model``'s."""
    expected = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    wrong = [k for k in expected if k in state and tuple(state[k].shape) != expected[k]]
    problems = []
    if missing:
        problems.append(f"{len(missing)} tensors missing (e.g. {missing[0]})")
    if unexpected:
        problems.append(f"{len(unexpected)} unexpected tensors (e.g. {unexpected[0]})")
    if wrong:
        k = wrong[0]
        problems.append(f"{len(wrong)} shapes differ (e.g. {k}: {tuple(state[k].shape)} vs {expected[k]})")
    if problems:
        raise WeightsError(f"{source} does not match its metadata: " + "; ".join(problems))


def load_pair(st_path: Path) -> tuple[nn.Module, WeightsMeta]:
    """Build, verify and load the model of one ``.safetensors`` + ``.json`` pair.
    Returns the model in eval mode with its metadata as ``model.attnviz_meta``."""
    st_path = Path(st_path)
    meta = WeightsMeta.from_json(st_path.with_suffix(".json"))
    digest = sha256_of(st_path)
    if meta.sha256 and digest != meta.sha256:
        raise WeightsError(
            f"{st_path.name}: sha256 {digest[:12]}... does not match the metadata's {meta.sha256[:12]}...")
    if not meta.sha256:
        raise WeightsError(f"{st_path.with_suffix('.json').name}: no sha256 of the weights file")
    try:
        with safe_open(str(st_path), framework="pt") as f:
            saved_arch = (f.metadata() or {}).get("arch")
        state = load_file(str(st_path))
    except (SafetensorError, OSError, ValueError) as exc:
        raise WeightsError(f"{st_path.name}: not a readable safetensors file ({exc})") from None
    if saved_arch and saved_arch != meta.arch:  # files written by save_pair say what they hold
        raise WeightsError(f"{st_path.name} holds a {saved_arch} but its metadata says {meta.arch}: "
                           "architecture mismatch")
    model = meta.build()
    check_state_dict(model, state, st_path.name)
    heads = attention_heads(model)
    if meta.attention_heads != heads:
        recorded = meta.attention_heads or "none recorded (older files have 4 in every layer)"
        raise WeightsError(f"{st_path.with_suffix('.json').name}: attention heads {recorded}, but this attnviz "
                           f"builds {heads}: re-train the model")
    model.load_state_dict(state, strict=True)
    model.eval()
    model.attnviz_meta = meta
    return model, meta


def save_pair(model: nn.Module, meta: WeightsMeta, directory: Path) -> Path:
    """Write ``<meta.name>.safetensors`` and its ``.json`` (sha256 filled in) into
    ``directory``; returns the weights path. Both files are written atomically."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    st_path = directory / f"{meta.name}.safetensors"
    meta.attention_heads = attention_heads(model)
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    tmp = st_path.with_suffix(".safetensors.tmp")
    # One metadata key: safetensors writes its metadata map in a random order, so with
    # two keys the same weights could be saved as files of different sha256.
    save_file(state, str(tmp), metadata={"arch": meta.arch})
    meta.sha256 = sha256_of(tmp)
    os.chmod(tmp, 0o644)  # safetensors writes 0600; a container's unprivileged user must read it
    os.replace(tmp, st_path)
    json_tmp = st_path.with_suffix(".json.tmp")
    json_tmp.write_text(meta.to_json())
    os.replace(json_tmp, st_path.with_suffix(".json"))
    return st_path
