import threading

import pytest

from attnviz.image import ImageError
from attnviz.service import ModelRegistry, ResultCache, sample_images

from .test_app import _png


@pytest.fixture
def registry(tiny_env):
    return ModelRegistry()


def test_models_load_once_and_are_shared(registry):
    assert registry.get("tiny_se_resnet18") is registry.get("tiny_se_resnet18")


def test_an_image_is_analysed_once_however_many_sessions_ask(registry):
    cache = ResultCache()
    data = _png()
    got = []
    threads = [threading.Thread(target=lambda: got.append(cache.get(data, "tiny_sa_resnet18", registry)))
               for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert cache.misses == 1 and len(got) == 8 and all(a is got[0] for a in got)


def test_the_cache_is_bounded_by_entries_and_bytes(registry):
    cache = ResultCache(max_entries=3)
    for i in range(5):
        cache.get(_png(seed=i), "tiny_sa_resnet18", registry)
    assert len(cache) == 3 and cache.misses == 5
    one = cache.nbytes // 3
    small = ResultCache(max_entries=10, max_bytes=2 * one + one // 2)
    for i in range(5):
        small.get(_png(seed=i), "tiny_sa_resnet18", registry)
    assert len(small) == 2 and small.nbytes <= small.max_bytes


def test_a_bad_image_is_not_cached_and_can_be_retried(registry):
    cache = ResultCache()
    with pytest.raises(ImageError):
        cache.get(b"nope", "tiny_se_resnet18", registry)
    assert len(cache) == 0 and not cache._key_locks


def test_samples_are_bundled_with_a_licence_file():
    samples = sample_images()
    assert len(samples) >= 5
    licences = (next(iter(samples.values())).parent / "LICENSES.md").read_text()
    assert all(p.name in licences for p in samples.values())
