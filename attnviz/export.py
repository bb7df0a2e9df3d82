"""What the CLI writes and the app offers for download: every captured tensor as NPZ,
and a JSON summary (model, weights hash, preprocessing, top-5, layers and shapes, and
each self-attention head's entropy and query-dependence)."""

from __future__ import annotations

import io
import json
import os
from pathlib import Path
from typing import Any

import numpy as np

from .analysis import Analysis
from .kinds import KINDS


def tensors(a: Analysis) -> dict[str, np.ndarray]:
    """``<kind>/<module path>`` -> array, plus ``probs``."""
    out = {"probs": a.probs.numpy()}
    for kind in (k for k in KINDS.values() if k.exported):
        for path, t in a.maps[kind.name].items():
            out[f"{kind.name}/{path}"] = t.numpy()
    return out


def npz_bytes(a: Analysis) -> bytes:
    buf = io.BytesIO()
    # Uncompressed: float32 attention matrices hardly shrink under zlib, at many times
    # the time (docs/benchmarks.md, "Explain throughput").
    np.savez(buf, **tensors(a))
    return buf.getvalue()


def summary(a: Analysis, source: str = "", top: int = 5) -> dict[str, Any]:
    meta = a.meta
    return {
        "image": source,
        "image_size": list(a.image_size),
        "model": a.model_name,
        "arch": meta.arch if meta else None,
        "weights_sha256": meta.sha256 if meta else None,
        "preprocessing": {
            "resize": "squash",
            "interpolation": meta.interpolation if meta else "bilinear",
            "input_size": a.size,
            "mean": list(meta.mean) if meta else None,
            "std": list(meta.std) if meta else None,
            "exif_transposed": True,
            "decoded_size": list(a.image.size),  # smaller than image_size when downscaled on load
        },
        "top5": [{"class": c, "probability": round(p, 6)} for c, p in a.top_k(top)],
        "layers": {
            f"{kind}/{path}": list(t.shape) for kind, kept in a.maps.items() if KINDS[kind].exported
            for path, t in kept.items()
        },
        "self_attn_grid": {k: list(v) for k, v in a.self_attn_grid.items()},
        # This image's entropy ÷ log N and query-dependence per head (attnviz.attention_quality)
        "self_attn_quality": {k: [{f: round(v, 6) for f, v in q.to_json().items() if v is not None}
                                  for q in heads] for k, heads in a.quality.items()},
    }


def json_bytes(a: Analysis, source: str = "") -> bytes:
    return (json.dumps(summary(a, source), indent=2) + "\n").encode()


def write_atomic(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` so that ``path`` is either absent or complete."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
