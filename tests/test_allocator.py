import resource

import pytest
import torch

from attnviz.allocator import _glibc, freed_memory_kept


def _faults_of_reused_tensor(times: int = 8) -> int:
    """Minor page faults of allocating, writing and freeing the same 64 MB tensor."""
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    for _ in range(times):
        torch.empty(16 << 20, dtype=torch.float32).fill_(1.0)
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before


@pytest.mark.skipif(_glibc() is None, reason="malloc is not glibc's")
def test_freed_memory_is_reused_inside_and_given_back_after():
    default = _faults_of_reused_tensor()
    with freed_memory_kept() as applied:
        assert applied
        _faults_of_reused_tensor(1)  # the first block comes from the OS
        kept = _faults_of_reused_tensor()
    after = _faults_of_reused_tensor()
    pages = 8 * (64 << 20) // resource.getpagesize()
    assert default > pages // 2  # every round faulted its pages in again
    assert kept < pages // 16  # reused: (almost) no new faults
    assert after > pages // 2  # the defaults are back


def test_does_nothing_where_malloc_is_not_glibc(monkeypatch):
    monkeypatch.setattr("attnviz.allocator._glibc", lambda: None)
    with freed_memory_kept() as applied:
        assert applied is False
