"""Keep freed memory in the process while training, where malloc is glibc's.

Every training step allocates and frees the same large tensors (a self-attention
matrix is batch x heads x N x N). glibc serves blocks above its mmap threshold with
``mmap`` and unmaps them on ``free``, and trims the top of its heap: the next step
faults the same pages in again, each one zero-filled by the kernel. Keeping them changes
where memory comes from, not a single value computed (the trained files are bit for bit
the same). What it saved, measured: docs/training.md, "Allocator change".
"""

from __future__ import annotations

import ctypes
import sys
from collections.abc import Iterator
from contextlib import contextmanager

# mallopt parameters and glibc's defaults for them (malloc.h, malloc.c).
M_TRIM_THRESHOLD, M_TOP_PAD, M_MMAP_MAX = -1, -2, -4
DEFAULTS = {M_TRIM_THRESHOLD: 128 * 1024, M_TOP_PAD: 0, M_MMAP_MAX: 65536}
KEEP = {M_MMAP_MAX: 0, M_TRIM_THRESHOLD: 2**31 - 1, M_TOP_PAD: 256 << 20}


def _glibc() -> ctypes.CDLL | None:
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL(None)
        libc.gnu_get_libc_version  # noqa: B018 - only glibc has it (not musl)
        return libc
    except (OSError, AttributeError):
        return None


@contextmanager
def freed_memory_kept() -> Iterator[bool]:
    """Inside the block, glibc's malloc serves every block from its heap (no ``mmap``)
    and keeps what is freed for reuse (no trimming). Yields whether that applies: False,
    changing nothing, where malloc is not glibc's. On exit the defaults are restored
    (without glibc's dynamic mmap threshold, which a ``mallopt`` call turns off) and the
    kept memory is given back."""
    libc = _glibc()
    if libc is None:
        yield False
        return
    applied = all(libc.mallopt(param, value) == 1 for param, value in KEEP.items())
    try:
        yield applied
    finally:
        for param, value in DEFAULTS.items():
            libc.mallopt(param, value)
        libc.malloc_trim(0)
