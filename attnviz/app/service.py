"""Shared, thread-safe state for a multi-user front end (the Streamlit app): models
loaded once per process, and a bounded cache of per-image analyses, so that a click
on a pixel is an index into stored tensors, never a new forward pass."""

from __future__ import annotations

import hashlib
import os
import tempfile
import threading
from collections import OrderedDict
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

from torch import nn

from .. import limits
from ..analysis import Analysis, analyze
from ..cam import check_available
from ..capture import attention_modules
from ..loading import load_model
from ..profile import SEProfile, profile_path
from ..weights import WeightsError, WeightsMeta, find_weights, load_pair

SAMPLES_DIR = Path(__file__).resolve().parent.parent / "samples"


DEFAULT_SAMPLE = "temple"
"""The sample the app opens on: a church, one of the ten classes the shipped models know."""


def sample_images() -> dict[str, Path]:
    """Bundled sample images by display name (see samples/LICENSES.md), the default first."""
    found = {p.stem.replace("_", " "): p for p in sorted(SAMPLES_DIR.glob("*.jpg"))}
    return dict(sorted(found.items(), key=lambda item: item[0] != DEFAULT_SAMPLE))


DOWNLOADS_ENV = "ATTNVIZ_ALLOW_DOWNLOADS"
"""Set to 1 where the server may download pretrained weights from the Hugging Face hub
(``HF_ENDPOINT``) when a visitor asks; off by default: then only weights already in the
server's Hugging Face cache (``attnviz fetch``, a Docker image built with ``PRETRAINED``) load."""


def downloads_allowed() -> bool:
    return os.environ.get(DOWNLOADS_ENV, "").strip().lower() in ("1", "true", "yes")


def image_key(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@dataclass(frozen=True, eq=False)
class ModelHandle:
    """One model as the page knows it: everything a view needs comes from here, never
    from a name matched again. ``key`` is unique per weights (a pair uploaded under a
    shipped model's name is another key); ``label`` is what the page shows; ``profile`` is
    the SE class profile shipped beside these very weights, or None; ``kinds`` the attention
    kinds the model produces (``kinds.KINDS``)."""

    key: str
    label: str
    model: nn.Module
    profile: SEProfile | None = None
    kinds: frozenset[str] = field(default_factory=frozenset)

    @property
    def meta(self) -> WeightsMeta:
        return self.model.attnviz_meta

    @property
    def is_timm(self) -> bool:
        return self.meta.arch.startswith("timm:")

    def has_any(self, kinds: Iterable[str]) -> bool:
        return not self.kinds.isdisjoint(kinds)

    def attention_line(self) -> str:
        """One line: the attention kinds attnviz found in a timm model (and what it cannot show), or ''."""
        if not self.is_timm:
            return ""
        from .. import timm_adapter

        return timm_adapter.summary_line(self.model, attention_modules(self.model))


def make_handle(key: str, label: str, model: nn.Module, profile: SEProfile | None = None) -> ModelHandle:
    return ModelHandle(key, label, model, profile, frozenset(attention_modules(model).values()))


def _pair_profile(path: Path, meta: WeightsMeta) -> SEProfile | None:
    """The SE class profile shipped beside the weights file ``path``, if it is that model's."""
    prof_path = profile_path(path)
    if not prof_path.is_file():
        return None
    prof = SEProfile.from_json(prof_path)
    return prof if prof.model == meta.name else None


class ModelRegistry:
    """Loads each model at most once per process and hands out ``ModelHandle``s; safe to
    share between sessions. Models are only ever used in eval mode under
    ``inference_mode``, and captures are per-thread, so one instance serves every session."""

    def __init__(self, upload_dir: Path | None = None, max_uploads: int = limits.MAX_UPLOADED_MODELS) -> None:
        self._lock = threading.Lock()
        self._files: dict[Path, ModelHandle] = {}  # weights pairs found on disk, by path
        self._uploads: OrderedDict[str, ModelHandle] = OrderedDict()  # by key
        self._pretrained: dict[str, ModelHandle] = {}  # ImageNet models, by timm name; shared by every session
        self._upload_dir = Path(upload_dir or Path(tempfile.gettempdir()) / "attnviz-uploads")
        self._max_uploads = max_uploads

    def names(self) -> list[str]:
        """Models found on disk (shipped and ``ATTNVIZ_WEIGHTS_DIR``); uploads are
        listed by the session that uploaded them."""
        return sorted(find_weights())

    def handle(self, name: str) -> ModelHandle:
        """The model found on disk under ``name``, loaded once (``WeightsError``: one line)."""
        found = find_weights()
        if name not in found:
            raise WeightsError(f"unknown model {name!r}; available: {', '.join(sorted(found)) or 'none'}")
        path = found[name]
        with self._lock:
            if path in self._files:
                return self._files[path]
        model, meta = load_pair(path)  # outside the lock: seconds for a large pair
        handle = make_handle(f"file-{name}-{meta.sha256[:12]}", name, model, _pair_profile(path, meta))
        with self._lock:
            return self._files.setdefault(path, handle)

    def upload(self, key: str) -> ModelHandle | None:
        """An uploaded model by its key, or None once newer uploads have replaced it."""
        with self._lock:
            return self._uploads.get(key)

    def add_upload(self, weights: bytes, metadata: bytes) -> ModelHandle:
        """Verify and load a user's ``.safetensors`` + ``.json`` pair. Raises
        ``WeightsError`` (one line) for anything that does not match its metadata. At most
        ``max_uploads`` uploaded models are kept, in memory only: the files are written to
        a private temporary folder, loaded, and deleted. It has no SE profile: a profile
        belongs to the weights it was measured on."""
        if len(weights) > limits.MAX_FILE_BYTES or len(metadata) > limits.MAX_FILE_BYTES:
            raise WeightsError(f"weights and metadata must each be at most {limits.MAX_UPLOAD_MB} MB")
        self._upload_dir.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(prefix="upload-", dir=self._upload_dir) as tmp:
            st_path = Path(tmp) / "model.safetensors"
            st_path.write_bytes(weights)
            st_path.with_suffix(".json").write_bytes(metadata)
            model, meta = load_pair(st_path)  # hash, architecture, names and shapes checked here
        digest = hashlib.sha256(weights + b"\0" + metadata).hexdigest()
        return self._keep(make_handle(f"upload-{digest[:16]}", f"{meta.name} (uploaded {digest[:8]})", model))

    def _keep(self, handle: ModelHandle) -> ModelHandle:
        """Keep an uploaded model, evicting the oldest beyond ``max_uploads``."""
        with self._lock:
            self._uploads[handle.key] = handle
            self._uploads.move_to_end(handle.key)
            while len(self._uploads) > self._max_uploads:
                self._uploads.popitem(last=False)
        return handle

    def add_timm(self, arch: str, checkpoint: bytes | None = None, filename: str = "checkpoint.safetensors"
                 ) -> ModelHandle:
        """Load a timm architecture (``timm_adapter.SUPPORTED`` or any timm name) with a
        user's checkpoint (``.safetensors``, or a ``.pth``/``.bin`` state dict, read with
        ``weights_only=True``), or with random weights when ``checkpoint`` is None. Kept
        like an upload (in memory, at most ``max_uploads``). Raises ``WeightsError`` (one
        line) for a checkpoint that does not fit."""
        if checkpoint is not None and len(checkpoint) > limits.MAX_CHECKPOINT_MB * 1024 * 1024:
            raise WeightsError(f"a checkpoint must be at most {limits.MAX_CHECKPOINT_MB} MB")
        suffix = Path(filename).suffix.lower()
        if checkpoint is not None and suffix not in (".safetensors", ".pth", ".pt", ".bin"):
            raise WeightsError(f"{filename}: expected a .safetensors, .pth, .pt or .bin file")
        if checkpoint is None:
            model = load_model(arch, pretrained=False)
            digest, what = hashlib.sha256(f"random {arch}".encode()).hexdigest(), "random weights"
        else:
            self._upload_dir.mkdir(parents=True, exist_ok=True)
            with tempfile.TemporaryDirectory(prefix="upload-", dir=self._upload_dir) as tmp:
                path = Path(tmp) / f"checkpoint{suffix}"
                path.write_bytes(checkpoint)
                model = load_model(arch, path)
            digest = hashlib.sha256(arch.encode() + b"\0" + checkpoint).hexdigest()
            what = f"uploaded {digest[:8]}"
        return self._keep(make_handle(f"timm-{digest[:16]}", f"{model.attnviz_meta.name} ({what})", model))


    def is_cached(self, name: str) -> bool:
        """Whether the pretrained weights of ``name`` (``timm_adapter.PRETRAINED``) are in the
        local Hugging Face cache or loaded already (a disk lookup: nothing is requested)."""
        from ..timm_adapter import cached_checkpoint

        with self._lock:
            if name in self._pretrained:
                return True
        return cached_checkpoint(name) is not None

    def add_pretrained(self, name: str, download: bool = False,
                       progress: Callable[[int, int | None], None] | None = None) -> ModelHandle:
        """A timm model with its ImageNet weights (``ARCH.TAG``, e.g. ``seresnet50.ra2_in1k``),
        loaded once per process and shared by every session: from the local Hugging Face
        cache, or, with ``download=True`` and not there, downloaded into it first
        (``progress(bytes done, bytes in all)`` as it goes). Raises ``WeightsError`` (one
        line): not in the cache and no download allowed, offline, a failed download."""
        from .. import timm_adapter

        with self._lock:
            if name in self._pretrained:
                return self._pretrained[name]
        if download and timm_adapter.cached_checkpoint(name) is None:
            timm_adapter.fetch(name, tqdm_class=timm_adapter.progress_class(progress) if progress else None)
        model = load_model(f"{timm_adapter.PREFIX}{name}")  # from the cache: no request
        handle = make_handle(f"pretrained-{name}-{model.attnviz_meta.sha256[:12]}", f"{model.attnviz_meta.name} "
                             "(ImageNet)", model)
        with self._lock:
            return self._pretrained.setdefault(name, handle)

    def pretrained(self, key: str) -> ModelHandle | None:
        """A pretrained model loaded by ``add_pretrained``, by its handle's key."""
        with self._lock:
            return next((h for h in self._pretrained.values() if h.key == key), None)


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

    def get(self, data: bytes, handle: ModelHandle, size: int | None = None) -> Analysis:
        # keyed by the handle: the same name from another folder, or uploaded again, is another model
        key = (image_key(data), handle.key, size)
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
                result = analyze(data, handle.model, size=size)
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
            results.get(data, registry.handle(name))
        except WeightsError as exc:
            problems.append(f"{name}: {exc}")
    try:  # the Compare view's Grad-CAM: its package (OpenCV, SciPy) takes seconds to import
        check_available()
    except ImportError as exc:
        problems.append(f"Grad-CAM: {exc}")
    return problems
