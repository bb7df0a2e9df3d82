import sys
import threading
from pathlib import Path

import pytest

from attnviz.app.service import ModelRegistry, ResultCache, sample_images
from attnviz.image import ImageError

from .test_app import _png


@pytest.fixture
def registry(tiny_env):
    return ModelRegistry()


def test_models_load_once_and_are_shared(registry):
    assert registry.handle("tiny_se_resnet18") is registry.handle("tiny_se_resnet18")
    assert registry.handle("tiny_se_resnet18").kinds == {"se"}


def test_an_image_is_analysed_once_however_many_sessions_ask(registry):
    cache = ResultCache()
    data = _png()
    got = []
    threads = [threading.Thread(target=lambda: got.append(cache.get(data, registry.handle("tiny_sa_resnet18"))))
               for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert cache.misses == 1 and len(got) == 8 and all(a is got[0] for a in got)


def test_the_cache_is_bounded_by_entries_and_bytes(registry):
    cache = ResultCache(max_entries=3)
    for i in range(5):
        cache.get(_png(seed=i), registry.handle("tiny_sa_resnet18"))
    assert len(cache) == 3 and cache.misses == 5
    one = cache.nbytes // 3
    small = ResultCache(max_entries=10, max_bytes=2 * one + one // 2)
    for i in range(5):
        small.get(_png(seed=i), registry.handle("tiny_sa_resnet18"))
    assert len(small) == 2 and small.nbytes <= small.max_bytes


def test_a_bad_image_is_not_cached_and_can_be_retried(registry):
    cache = ResultCache()
    with pytest.raises(ImageError):
        cache.get(b"nope", registry.handle("tiny_se_resnet18"))
    assert len(cache) == 0 and not cache._key_locks


def test_samples_are_bundled_with_a_licence_file():
    samples = sample_images()
    assert len(samples) >= 5
    licences = (next(iter(samples.values())).parent / "LICENSES.md").read_text()
    assert all(p.name in licences for p in samples.values())


def _pair_bytes(tiny_weights_dir, name="tiny_cbam_resnet18"):
    return ((tiny_weights_dir / f"{name}.safetensors").read_bytes(),
            (tiny_weights_dir / f"{name}.json").read_bytes())


def test_an_uploaded_pair_is_verified_and_usable(tiny_weights_dir, tmp_path):
    reg = ModelRegistry(upload_dir=tmp_path)
    handle = reg.add_upload(*_pair_bytes(tiny_weights_dir))
    assert handle.label.startswith("tiny_cbam_resnet18 (uploaded ") and reg.upload(handle.key) is handle
    a = ResultCache().get(_png(), handle)
    assert len(a.cbam_spatial) == 8 and handle.kinds == {"cbam_channel", "cbam_spatial"}


def test_an_uploaded_pair_that_does_not_match_its_metadata_is_refused(tiny_weights_dir, tmp_path):
    import json

    from attnviz.weights import WeightsError

    reg = ModelRegistry(upload_dir=tmp_path)
    weights, meta = _pair_bytes(tiny_weights_dir)
    with pytest.raises(WeightsError, match="sha256"):
        reg.add_upload(weights[:-1] + bytes([weights[-1] ^ 1]), meta)
    wrong_arch = json.loads(meta)
    wrong_arch["arch"] = "se_resnet18"
    with pytest.raises(WeightsError, match="holds a cbam_resnet18 but its metadata says se_resnet18"):
        reg.add_upload(weights, json.dumps(wrong_arch).encode())
    with pytest.raises(WeightsError, match="not readable JSON"):
        reg.add_upload(weights, b"{")
    assert list(tmp_path.iterdir()) == []  # nothing of a refused upload stays on disk


def test_uploads_leave_no_files_and_pairs_differing_in_metadata_stay_apart(tiny_weights_dir, tmp_path):
    import json

    reg = ModelRegistry(upload_dir=tmp_path)
    weights, meta = _pair_bytes(tiny_weights_dir)
    renamed = json.loads(meta)
    renamed["classes"] = ["x", "y", "z"]
    first = reg.add_upload(weights, meta)
    second = reg.add_upload(weights, json.dumps(renamed).encode())
    assert first.key != second.key and list(tmp_path.iterdir()) == []
    assert first.meta.classes == ["alpha", "beta", "gamma"] and second.meta.classes == ["x", "y", "z"]
    assert first.profile is None


def test_uploaded_models_are_bounded(tiny_weights_dir, tmp_path):
    reg = ModelRegistry(upload_dir=tmp_path, max_uploads=2)
    handles = [reg.add_upload(*_pair_bytes(tiny_weights_dir, f"tiny_{a}")) for a in
               ["resnet18", "se_resnet18", "sa_resnet18"]]
    assert [reg.upload(h.key) is h for h in handles] == [False, True, True]


def test_eight_concurrent_sessions_get_exactly_their_own_results(registry):
    import torch

    images = [_png(64 + 9 * i, 48 + 5 * i, seed=i) for i in range(8)]
    handle = registry.handle("tiny_sa_resnet18")
    alone = [ResultCache().get(d, handle) for d in images]
    shared = ResultCache()
    got: dict[int, object] = {}
    barrier = threading.Barrier(8)

    def session(i):
        barrier.wait()
        got[i] = shared.get(images[i], handle)

    threads = [threading.Thread(target=session, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for i in range(8):
        torch.testing.assert_close(got[i].probs, alone[i].probs, rtol=1e-6, atol=1e-7)
        for k, v in alone[i].self_attn.items():
            torch.testing.assert_close(got[i].self_attn[k], v, rtol=1e-6, atol=1e-7)
    model = handle.model
    assert all(not m._forward_hooks for m in model.modules())


def test_warm_up_also_imports_grad_cam_or_says_why_not(tiny_env, monkeypatch):
    from attnviz.app import service

    monkeypatch.setattr("attnviz.weights.SHIPPED_DIR", Path("/nonexistent"))
    monkeypatch.setattr(service, "_shared", None)
    assert service.warm_up() == [] and "pytorch_grad_cam" in sys.modules
    monkeypatch.setitem(sys.modules, "pytorch_grad_cam", None)
    assert service.warm_up() == ["Grad-CAM: Grad-CAM needs the grad-cam package: pip install 'attnviz[cam]' "
                                 "(or grad-cam>=1.5)"]
