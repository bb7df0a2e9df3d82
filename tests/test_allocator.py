import ctypes

import pytest
import torch

from attnviz.allocator import _glibc, freed_memory_kept

BLOCK = 64 << 20  # bytes: far above glibc's largest mmap threshold (32 MB)


class _MallInfo2(ctypes.Structure):
    _fields_ = [(name, ctypes.c_size_t) for name in
                ("arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks", "uordblks", "fordblks",
                 "keepcost")]


def _mallinfo() -> _MallInfo2:
    libc = _glibc()
    libc.mallinfo2.restype = _MallInfo2
    return libc.mallinfo2()


def _where_a_block_goes() -> tuple[int, int]:
    """(bytes mmapped to hold one BLOCK tensor, free bytes in the heap once it is freed)."""
    before = _mallinfo()
    t = torch.empty(BLOCK // 4, dtype=torch.float32)
    held = _mallinfo()
    del t
    return held.hblkhd - before.hblkhd, _mallinfo().fordblks


@pytest.mark.skipif(_glibc() is None or not hasattr(_glibc(), "mallinfo2"), reason="malloc is not glibc >= 2.33")
def test_freed_memory_stays_in_the_heap_inside_only():
    assert _where_a_block_goes()[0] >= BLOCK  # the defaults: mmapped (and unmapped on free)
    with freed_memory_kept() as applied:
        assert applied
        mmapped, free_in_heap = _where_a_block_goes()
        assert mmapped == 0 and free_in_heap >= BLOCK  # from the heap, kept there for the next step
    assert _where_a_block_goes()[0] >= BLOCK  # the defaults are back


def test_does_nothing_where_malloc_is_not_glibc(monkeypatch):
    monkeypatch.setattr("attnviz.allocator._glibc", lambda: None)
    with freed_memory_kept() as applied:
        assert applied is False
