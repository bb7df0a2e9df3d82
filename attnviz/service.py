"""Shared, thread-safe state for a multi-user front end (the Streamlit app): models
loaded once per process, and a bounded cache of per-image analyses, so that a click
on a pixel is an index into stored tensors, never a new forward pass."""

from __future__ import annotations

import hashlib
import threading
from collections import OrderedDict
from pathlib import Path

from torch import nn

from . import limits
from .analysis import Analysis, analyze
from .profile import SEProfile, profile_path
from .weights import WeightsError, WeightsMeta, find_weights, load_pair

SAMPLES_DIR = Path(__file__).resolve().parent / "samples"


def sample_images() -> dict[str, Path]:
    """Bundled sample images by display name (see samples/LICENSES.md)."""
    return {p.stem.replace("_", " "): p for p in sorted(SAMPLES_DIR.glob("*.jpg"))}


def image_key(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


class ModelRegistry:
    """Loads each model at most once per process; safe to share between sessions.
    Models are only ever used in eval mode under ``inference_mode``, and captures
    are per-thread, so one instance serves every session."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._models: dict[Path, nn.Module] = {}
        self._profiles: dict[Path, SEProfile | None] = {}

    def names(self) -> list[str]:
        return sorted(find_weights())

    @staticmethod
    def _path(name: str) -> Path:
        found = find_weights()
        if name not in found:
            raise WeightsError(f"unknown model {name!r}; available: {', '.join(sorted(found)) or 'none'}")
        return found[name]

    def get(self, name: str) -> nn.Module:
        path = self._path(name)
        with self._lock:
            if path not in self._models:
                self._models[path] = load_pair(path)[0]
            return self._models[path]

    def meta(self, name: str) -> WeightsMeta:
        return self.get(name).attnviz_meta

    def profile(self, name: str) -> SEProfile | None:
        """The SE class profile shipped next to the model's weights, read once."""
        path = profile_path(self._path(name))
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
        key = (image_key(data), model_name, size)
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
