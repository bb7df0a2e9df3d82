import ctypes

import pytest
import torch

from attnviz.training.allocator import _glibc, freed_memory_kept

GIB = 1 << 30  # bytes; the tensors below are never written, so no memory is touched


class _MallInfo2(ctypes.Structure):
    _fields_ = [(name, ctypes.c_size_t) for name in
                ("arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks", "uordblks", "fordblks",
                 "keepcost")]


def _mallinfo() -> _MallInfo2:
    libc = _glibc()
    libc.mallinfo2.restype = _MallInfo2
    return libc.mallinfo2()


def _where_a_block_goes(nbytes: int) -> tuple[int, int]:
    """(bytes mmapped to hold an ``nbytes`` tensor, free bytes in the heap once it is freed)."""
    before = _mallinfo()
    t = torch.empty(nbytes, dtype=torch.uint8)
    held = _mallinfo()
    del t
    return held.hblkhd - before.hblkhd, _mallinfo().fordblks


@pytest.mark.skipif(_glibc() is None or not hasattr(_glibc(), "mallinfo2"), reason="malloc is not glibc >= 2.33")
def test_freed_memory_stays_in_the_heap_inside_only():
    assert _where_a_block_goes(GIB)[0] >= GIB  # the defaults: mmapped (and unmapped on free)
    with freed_memory_kept() as applied:
        assert applied
        mmapped, free_in_heap = _where_a_block_goes(GIB)
        assert mmapped == 0 and free_in_heap >= GIB  # from the heap, kept there for the next step
    # The defaults are back: a block larger than any free chunk left in the heap is mmapped.
    assert _where_a_block_goes(2 * GIB)[0] >= 2 * GIB


def test_does_nothing_where_malloc_is_not_glibc(monkeypatch):
    monkeypatch.setattr("attnviz.training.allocator._glibc", lambda: None)
    with freed_memory_kept() as applied:
        assert applied is False
