"""Shared, thread-safe state for a multi-user front end (the Streamlit app): models
loaded once per process, and a bounded cache of per-image analyses, so that a click
on a pixel is an index into stored tensors, never a new forward pass."""

from __future__ import annotations

import hashlib
import tempfile
import threading
from collections import OrderedDict
from pathlib import Path

from torch import nn

from .. import limits
from ..analysis import Analysis, analyze
from ..cam import check_available
from ..profile import SEProfile, profile_path
from ..weights import WeightsError, WeightsMeta, find_weights, load_pair

SAMPLES_DIR = Path(__file__).resolve().parent.parent / "samples"


DEFAULT_SAMPLE = "temple"
"""The sample the app opens on: a church, one of the ten classes the shipped models know."""


def sample_images() -> dict[str, Path]:
    """Bundled sample images by display name (see samples/LICENSES.md), the default first."""
    found = {p.stem.replace("_", " "): p for p in sorted(SAMPLES_DIR.glob("*.jpg"))}
    return dict(sorted(found.items(), key=lambda item: item[0] != DEFAULT_SAMPLE))


def image_key(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


class ModelRegistry:
    """Loads each model at most once per process; safe to share between sessions.
    Models are only ever used in eval mode under ``inference_mode``, and captures
    are per-thread, so one instance serves every session."""

    def __init__(self, upload_dir: Path | None = None, max_uploads: int = limits.MAX_UPLOADED_MODELS) -> None:
        self._lock = threading.Lock()
        self._models: dict[Path | str, nn.Module] = {}  # by weights path, or "upload:<sha256>"
        self._profiles: dict[Path, SEProfile | None] = {}
        self._uploads: OrderedDict[str, str] = OrderedDict()
        self._upload_dir = Path(upload_dir or Path(tempfile.gettempdir()) / "attnviz-uploads")
        self._max_uploads = max_uploads

    def names(self) -> list[str]:
        """Models found on disk (shipped and ``ATTNVIZ_WEIGHTS_DIR``); uploads are
        listed by the session that uploaded them."""
        return sorted(find_weights())

    def _path(self, name: str) -> Path | str:
        with self._lock:
            if name in self._uploads:
                return self._uploads[name]
        found = find_weights()
        if name not in found:
            raise WeightsError(f"unknown model {name!r}; available: {', '.join(sorted(found)) or 'none'}")
        return found[name]

    def add_upload(self, weights: bytes, metadata: bytes) -> str:
        """Verify and load a user's ``.safetensors`` + ``.json`` pair; returns the name
        it is known by. Raises ``WeightsError`` (one line) for anything that does not
        match its metadata. At most ``max_uploads`` uploaded models are kept, in memory
        only: the files are written to a private temporary folder, loaded, and deleted."""
        if len(weights) > limits.MAX_FILE_BYTES or len(metadata) > limits.MAX_FILE_BYTES:
            raise WeightsError(f"weights and metadata must each be at most {limits.MAX_UPLOAD_MB} MB")
        self._upload_dir.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(prefix="upload-", dir=self._upload_dir) as tmp:
            st_path = Path(tmp) / "model.safetensors"
            st_path.write_bytes(weights)
            st_path.with_suffix(".json").write_bytes(metadata)
            model, meta = load_pair(st_path)  # hash, architecture, names and shapes checked here
        digest = hashlib.sha256(weights + b"\0" + metadata).hexdigest()
        return self._keep(f"{meta.name} (uploaded {digest[:8]})", f"upload:{digest}", model)

    def _keep(self, name: str, key: str, model: nn.Module) -> str:
        """Keep an uploaded model under ``name``, evicting the oldest beyond ``max_uploads``."""
        with self._lock:
            self._models[key] = model
            self._uploads[name] = key
            self._uploads.move_to_end(name)
            while len(self._uploads) > self._max_uploads:
                _, old = self._uploads.popitem(last=False)
                self._models.pop(old, None)
        return name

    def add_timm(self, arch: str, checkpoint: bytes | None = None, filename: str = "checkpoint.safetensors") -> str:
        """Load a timm architecture (``timm_adapter.SUPPORTED`` or any timm name) with a
        user's checkpoint (``.safetensors``, or a ``.pth``/``.bin`` state dict, read with
        ``weights_only=True``), or with random weights when ``checkpoint`` is None; returns
        the name it is known by. Kept like an upload (in memory, at most ``max_uploads``).
        Raises ``WeightsError`` (one line) for a checkpoint that does not fit."""
        from .. import timm_adapter

        if checkpoint is not None and len(checkpoint) > limits.MAX_CHECKPOINT_MB * 1024 * 1024:
            raise WeightsError(f"a checkpoint must be at most {limits.MAX_CHECKPOINT_MB} MB")
        suffix = Path(filename).suffix.lower()
        if checkpoint is not None and suffix not in (".safetensors", ".pth", ".pt", ".bin"):
            raise WeightsError(f"{filename}: expected a .safetensors, .pth, .pt or .bin file")
        if checkpoint is None:
            model = timm_adapter.load(arch, pretrained=False)
            digest, what = hashlib.sha256(f"random {arch}".encode()).hexdigest(), "random weights"
        else:
            self._upload_dir.mkdir(parents=True, exist_ok=True)
            with tempfile.TemporaryDirectory(prefix="upload-", dir=self._upload_dir) as tmp:
                path = Path(tmp) / f"checkpoint{suffix}"
                path.write_bytes(checkpoint)
                model = timm_adapter.load(arch, path)
            digest = hashlib.sha256(arch.encode() + b"\0" + checkpoint).hexdigest()
            what = f"uploaded {digest[:8]}"
        return self._keep(f"{model.attnviz_meta.name} ({what})", f"upload:{digest}", model)

    def attention_line(self, name: str) -> str:
        """One line: the attention kinds attnviz found in the model (timm models), or ''."""
        model = self.get(name)
        if not model.attnviz_meta.arch.startswith("timm:"):
            return ""
        from .. import timm_adapter
        from ..capture import attention_modules

        return timm_adapter.summary_line(model, attention_modules(model))

    def has(self, name: str) -> bool:
        with self._lock:
            return name in self._uploads or name in find_weights()

    def get(self, name: str) -> nn.Module:
        path = self._path(name)
        with self._lock:
            if path not in self._models:
                if isinstance(path, str):  # evicted by newer uploads since _path looked
                    raise WeightsError(f"{name} is no longer loaded (newer uploads replaced it); upload it again")
                self._models[path] = load_pair(path)[0]
            return self._models[path]

    def meta(self, name: str) -> WeightsMeta:
        return self.get(name).attnviz_meta

    def profile(self, name: str) -> SEProfile | None:
        """The SE class profile shipped next to the model's weights, read once
        (uploaded models have none)."""
        where = self._path(name)
        if isinstance(where, str):
            return None
        path = profile_path(where)
        with self._lock:
            if path not in self._profiles:
                self._profiles[path] = SEProfile.from_json(path) if path.is_file() else None
            return self._profiles[path]


class ResultCache:
    """LRU of analyses keyed by (image hash, model, size), bounded by entries and
    bytes. An analysis is computed once even if several sessions ask at once."""

    def __init__(self, max_entries: int = limits.RESULT_CACHE_ENTRIES,
                 max_bytes: int = limits.RESULT_CACHE_MB * 1024 * 1024) -> None:
        self.max_entries, self.max_bytes = max_entries, max_bytes
        self._lock = threading.Lock()
        self._entries: OrderedDict[tuple, Analysis] = OrderedDict()
        self._key_locks: dict[tuple, threading.Lock] = {}
        self.misses = 0

    @property
    def nbytes(self) -> int:
        with self._lock:
            return sum(a.nbytes for a in self._entries.values())

    def __len__(self) -> int:
        with self._lock:
            return len(self._entries)

    def get(self, data: bytes, model_name: str, registry: ModelRegistry, size: int | None = None) -> Analysis:
        # keyed by where the weights come from, not only their name: a name found in
        # another folder, or uploaded again, is another model
        key = (image_key(data), model_name, str(registry._path(model_name)), size)
        with self._lock:
            if key in self._entries:
                self._entries.move_to_end(key)
                return self._entries[key]
            key_lock = self._key_locks.setdefault(key, threading.Lock())
        with key_lock:  # one forward pass per key, however many sessions ask
            with self._lock:
                if key in self._entries:
                    return self._entries[key]
            try:
                result = analyze(data, registry.get(model_name), size=size)
            except BaseException:
                with self._lock:
                    self._key_locks.pop(key, None)
                raise
            with self._lock:  # stored and unlocked at once: no second computation can slip in
                self.misses += 1
                self._entries[key] = result
                self._key_locks.pop(key, None)
                self._evict()
            return result

    def _evict(self) -> None:
        total = sum(a.nbytes for a in self._entries.values())
        while self._entries and (len(self._entries) > self.max_entries or total > self.max_bytes):
            _, old = self._entries.popitem(last=False)
            total -= old.nbytes


_shared: tuple[ModelRegistry, ResultCache] | None = None
_shared_lock = threading.Lock()


def shared() -> tuple[ModelRegistry, ResultCache]:
    """The process's one model registry and result cache: every session of the page
    and the warm-up at server start use the same two."""
    global _shared
    with _shared_lock:
        if _shared is None:
            _shared = ModelRegistry(), ResultCache()
        return _shared


def warm_up() -> list[str]:
    """Load every model found, analyse the sample the page opens on with each and import
    Grad-CAM's package, so that the first visitor finds all ready. Returns what it could
    not load, one line each (the page says the same when a visitor asks)."""
    registry, results = shared()
    data = next(iter(sample_images().values())).read_bytes()
    problems = []
    for name in registry.names():
        try:
            results.get(data, name, registry)
        except WeightsError as exc:
            problems.append(f"{name}: {exc}")
    try:  # the Compare view's Grad-CAM: its package (OpenCV, SciPy) takes seconds to import
        check_available()
    except ImportError as exc:
        problems.append(f"Grad-CAM: {exc}")
    return problems
