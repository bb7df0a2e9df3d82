"""Pretrained on demand (issue 36): timm weights downloaded only where the caller asks, from
a local server that speaks the hub's protocol (``tests/hub_server.py``), into a cache in a
temporary folder. Each download runs in a subprocess with ``HF_ENDPOINT`` and ``HF_HOME``
set, as a user's would: huggingface_hub reads both when it is imported."""

from __future__ import annotations

import io
import os
import pickle
import subprocess
import sys
from pathlib import Path

import pytest
import torch

timm = pytest.importorskip("timm")

from safetensors.torch import save as save_safetensors  # noqa: E402

from .conftest import noise_image, randomise_bn  # noqa: E402
from .hub_server import Hub  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
NAME = "test_resnet.r160_in1k"  # a tagged name with an hf_hub_id; 0.5 M parameters
REPO = f"timm/{NAME}"
SAFETENSORS = (REPO, "model.safetensors")
BIN = (REPO, "pytorch_model.bin")


def _random_model() -> torch.nn.Module:
    torch.manual_seed(0)
    return randomise_bn(timm.create_model(NAME, pretrained=False))


@pytest.fixture(scope="module")
def served() -> tuple[bytes, torch.Tensor]:
    """The checkpoint the hub serves, and its model's logits on the test input."""
    model = _random_model()
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as the subprocesses (OMP_NUM_THREADS=1): the same sums in the same order
    try:
        with torch.inference_mode():
            logits = model(_input())
    finally:
        torch.set_num_threads(threads)
    return save_safetensors({k: v.contiguous() for k, v in model.state_dict().items()}), logits


def _input() -> torch.Tensor:
    torch.manual_seed(1)
    return torch.randn(1, 3, 64, 64)


@pytest.fixture
def hub():
    with Hub() as h:
        yield h


def _env(tmp_path: Path, endpoint: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HF_", "HUGGINGFACE_"))}
    env.update(HF_ENDPOINT=endpoint, HF_HOME=str(tmp_path / "hf"), PYTHONPATH=str(ROOT), NO_PROXY="127.0.0.1",
               no_proxy="127.0.0.1", HF_HUB_DISABLE_TELEMETRY="1", HF_HUB_DOWNLOAD_TIMEOUT="10",
               HF_HUB_ETAG_TIMEOUT="10", OMP_NUM_THREADS="1")
    return env


LOAD = """
import sys, torch, attnviz
from attnviz.weights import WeightsError
try:
    model = attnviz.load_model(sys.argv[1], download=sys.argv[2] == "download")
except WeightsError as exc:
    print("ERROR", exc)
    sys.exit(3)
torch.manual_seed(1)
with torch.inference_mode():
    torch.save(model(torch.randn(1, 3, 64, 64)), sys.argv[3])
meta = model.attnviz_meta
print("LOADED", meta.name, meta.classes[0], meta.class_ids[0], len(meta.classes), meta.sha256)
"""


def _load(tmp_path: Path, hub_url: str, download: bool, name: str = f"timm:{NAME}") -> subprocess.CompletedProcess:
    tmp_path.mkdir(parents=True, exist_ok=True)
    return subprocess.run([sys.executable, "-c", LOAD, name, "download" if download else "cache",
                           str(tmp_path / "logits.pt")], env=_env(tmp_path, hub_url), cwd=ROOT,
                          capture_output=True, text=True, timeout=300)


def _cli(tmp_path: Path, hub_url: str, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "attnviz.cli", *args], env=_env(tmp_path, hub_url), cwd=ROOT,
                          capture_output=True, text=True, timeout=300)


def _snapshots(tmp_path: Path) -> list[Path]:
    return sorted(p for p in (tmp_path / "hf").rglob("snapshots/*/*"))


def _one_error_line(r: subprocess.CompletedProcess, prefix: str = "ERROR ") -> str:
    lines = [line for line in r.stdout.splitlines() + r.stderr.splitlines() if line.startswith(prefix)]
    assert len(lines) == 1 and "Traceback" not in r.stderr, r.stdout + r.stderr
    return lines[0]


def test_download_then_load_gives_the_served_weights_and_a_second_load_makes_no_request(tmp_path, hub, served):
    data, logits = served
    hub.files[SAFETENSORS] = data
    r = _load(tmp_path, hub.url, download=True)
    assert r.returncode == 0, r.stdout + r.stderr
    torch.testing.assert_close(torch.load(tmp_path / "logits.pt"), logits, rtol=0, atol=0)
    assert [m for m, _ in hub.seen()] == ["HEAD", "GET"] and all(p.endswith("/model.safetensors")
                                                                 for _, p in hub.seen())
    # the ImageNet classes from timm's own class info, the weights' sha256
    import hashlib
    assert f"LOADED timm:{NAME} tench n01440764 1000 {hashlib.sha256(data).hexdigest()}" in r.stdout
    # into the standard cache layout, nothing left half-written
    cache = tmp_path / "hf" / "hub" / f"models--timm--{NAME}"
    assert [p.name for p in _snapshots(tmp_path)] == ["model.safetensors"] and cache.is_dir()
    assert not list(cache.rglob("*.incomplete"))

    for download in (False, True):  # found in the cache: no request, asked to download or not
        r = _load(tmp_path, hub.url, download=download)
        assert r.returncode == 0, r.stdout + r.stderr
        torch.testing.assert_close(torch.load(tmp_path / "logits.pt"), logits, rtol=0, atol=0)
    assert len(hub.seen()) == 2


def test_nothing_is_requested_unless_a_download_is_asked_for(tmp_path, hub, served):
    hub.files[SAFETENSORS] = served[0]
    r = _load(tmp_path, hub.url, download=False)
    assert r.returncode == 3
    line = _one_error_line(r)
    assert "not in the local Hugging Face cache" in line and "--download" in line
    img = tmp_path / "x.png"
    noise_image(40, 30).save(img)
    r = _cli(tmp_path, hub.url, "intervene", str(img), "--model", f"timm:{NAME}", "--what", "gates-off")
    assert r.returncode == 2 and _one_error_line(r, "attnviz: error:")
    assert hub.seen() == [] and _snapshots(tmp_path) == []


def test_fetch_once_then_every_command_works_offline(tmp_path, served):
    img = tmp_path / "x.png"
    noise_image(40, 30).save(img)
    with Hub() as hub:
        hub.files[SAFETENSORS] = served[0]
        r = _cli(tmp_path, hub.url, "fetch", f"timm:{NAME}")
        assert r.returncode == 0, r.stderr
        assert r.stdout.startswith(f"timm:{NAME}: ") and "model.safetensors" in r.stdout
        url = hub.url
    # the server is gone: the model is found in the cache
    r = _cli(tmp_path, url, "explain", str(img), "--model", f"timm:{NAME}", "--out", str(tmp_path / "out"),
             "--no-png", "--quiet")
    assert r.returncode == 0, r.stderr
    assert (tmp_path / "out" / "x.npz").is_file()
    # --download where it is found already: still no request (the server is gone)
    r = _cli(tmp_path, url, "explain", str(img), "--model", f"timm:{NAME}", "--download", "--out",
             str(tmp_path / "out2"), "--no-png", "--quiet")
    assert r.returncode == 0, r.stderr


def test_an_interrupted_transfer_leaves_nothing_that_loads_and_a_later_download_completes(tmp_path, hub, served):
    data, logits = served
    hub.files[SAFETENSORS] = data
    hub.cut[SAFETENSORS] = len(data) // 3  # on every try, also the resumed ones
    r = _load(tmp_path, hub.url, download=True)
    assert r.returncode == 3
    line = _one_error_line(r)
    assert "download failed (" in line and "nothing that loads was kept" in line
    assert _snapshots(tmp_path) == []
    requests = len(hub.seen())
    r = _load(tmp_path, hub.url, download=False)  # the partial file is no model
    assert r.returncode == 3 and "not in the local Hugging Face cache" in _one_error_line(r)
    assert len(hub.seen()) == requests

    del hub.cut[SAFETENSORS]
    r = _load(tmp_path, hub.url, download=True)
    assert r.returncode == 0, r.stdout + r.stderr
    torch.testing.assert_close(torch.load(tmp_path / "logits.pt"), logits, rtol=0, atol=0)


def test_a_corrupt_transfer_is_removed_and_never_loads(tmp_path, hub, served):
    hub.files[SAFETENSORS] = served[0]
    hub.corrupt.add(SAFETENSORS)
    r = _load(tmp_path, hub.url, download=True)
    assert r.returncode == 3 and "is corrupt" in _one_error_line(r)
    assert _snapshots(tmp_path) == []
    assert [p for p in (tmp_path / "hf").rglob("blobs/*") if not p.name.endswith(".incomplete")] == []
    r = _load(tmp_path, hub.url, download=False)
    assert r.returncode == 3 and "not in the local Hugging Face cache" in _one_error_line(r)


class _Payload:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


def test_a_bin_is_read_without_running_code_and_one_holding_code_is_refused(tmp_path, hub, served):
    # no safetensors in the repo (404 EntryNotFound): pytorch_model.bin is tried next
    state = _random_model().state_dict()
    buf = io.BytesIO()
    torch.save(state, buf)
    hub.files[BIN] = buf.getvalue()
    r = _load(tmp_path / "plain", hub.url, download=True)
    assert r.returncode == 0, r.stdout + r.stderr
    torch.testing.assert_close(torch.load(tmp_path / "plain" / "logits.pt"), served[1], rtol=0, atol=0)
    assert [p.rsplit("/", 1)[1] for _, p in hub.seen()] == ["model.safetensors", "pytorch_model.bin",
                                                            "pytorch_model.bin"]

    marker = tmp_path / "code-ran"
    hub.files[BIN] = pickle.dumps({"conv1.weight": _Payload(marker)})
    r = _load(tmp_path / "code", hub.url, download=True)
    assert r.returncode == 3
    line = _one_error_line(r)
    assert "refused" in line and "was not run" in line
    assert not marker.exists()


def test_offline_is_one_line(tmp_path):
    with Hub() as hub:
        closed = hub.url  # nothing listens there once the server is closed
    r = _cli(tmp_path, closed, "fetch", f"timm:{NAME}")
    assert r.returncode == 2
    assert "offline" in _one_error_line(r, "attnviz: error:")
    env = _env(tmp_path, closed) | {"HF_HUB_OFFLINE": "1"}
    r = subprocess.run([sys.executable, "-m", "attnviz.cli", "fetch", NAME], env=env, cwd=ROOT, capture_output=True,
                       text=True, timeout=300)
    assert r.returncode == 2 and "HF_HUB_OFFLINE" in _one_error_line(r, "attnviz: error:")


def test_download_rules_on_the_command_line(tmp_path, capsys):
    from attnviz.cli import main

    img = tmp_path / "x.png"
    noise_image(40, 30).save(img)
    assert main(["explain", str(img), "--model", "se_resnet18", "--download", "--out", str(tmp_path)]) == 2
    assert "--download is for timm models" in capsys.readouterr().err
    assert main(["explain", str(img), "--model", f"timm:{NAME}", "--download", "--random-weights",
                 "--out", str(tmp_path)]) == 2
    assert "exclude each other" in capsys.readouterr().err
    assert main(["fetch", "timm:no_such_net"]) == 2
    assert "timm has no model 'no_such_net'" in capsys.readouterr().err


def test_every_offered_pretrained_tag_is_a_timm_model_on_the_hub():
    from attnviz import timm_adapter

    for name, row in timm_adapter.PRETRAINED.items():
        assert timm.is_model(name) and timm_adapter.hub_repo(name) == f"timm/{name}"
        cfg = timm.models.get_pretrained_cfg(name)
        assert cfg.input_size[-1] == row.size and cfg.num_classes == 1000
        assert name.split(".")[0] in timm_adapter.SUPPORTED


REGISTRY = """
import sys
from attnviz.app.service import ModelRegistry
seen = []
registry = ModelRegistry()
print("CACHED", registry.is_cached(sys.argv[1]))
handle = registry.add_pretrained(sys.argv[1], download=True, progress=lambda done, total: seen.append((done, total)))
assert registry.add_pretrained(sys.argv[1]) is handle and registry.pretrained(handle.key) is handle
print("CACHED", registry.is_cached(sys.argv[1]))
print("PROGRESS", len(seen), seen[-1][0] == seen[-1][1], seen[-1][1])
print("HANDLE", handle.key.startswith("pretrained-" + sys.argv[1]), handle.label)
"""


def test_the_app_registry_downloads_with_progress_once_per_process(tmp_path, hub, served):
    hub.files[SAFETENSORS] = served[0]
    r = subprocess.run([sys.executable, "-c", REGISTRY, NAME], env=_env(tmp_path, hub.url), cwd=ROOT,
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stdout + r.stderr
    before, after, progress, handle = r.stdout.splitlines()
    assert (before, after, handle) == ("CACHED False", "CACHED True", f"HANDLE True timm:{NAME} (ImageNet)")
    _, updates, complete, total = progress.split()
    assert int(updates) >= 1 and complete == "True" and int(total) == len(served[0])  # the bar ends at 100 %
    assert len(hub.seen("GET")) == 1


@pytest.fixture
def pretrained_app(tiny_env, monkeypatch, tmp_path):
    """The app with the tiny models and a ``PRETRAINED`` list of one row, ``NAME``, and an
    empty Hugging Face cache in ``tmp_path``."""
    from streamlit.testing.v1 import AppTest

    from attnviz import timm_adapter

    monkeypatch.setattr("attnviz.weights.SHIPPED_DIR", Path("/nonexistent"))
    monkeypatch.setattr(timm_adapter, "PRETRAINED", {NAME: timm_adapter.Pretrained(NAME, 0.47, 50.0, 160, "test")})
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_CACHE", str(tmp_path / "hf" / "hub"))
    monkeypatch.setattr("huggingface_hub.file_download.HF_HUB_CACHE", str(tmp_path / "hf" / "hub"), raising=False)
    monkeypatch.delenv("ATTNVIZ_ALLOW_DOWNLOADS", raising=False)
    at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=120)
    at.run()
    assert not at.exception, at.exception
    return at


def test_the_app_says_in_one_line_that_downloads_are_off_and_loads_what_the_cache_has(pretrained_app, tmp_path,
                                                                                      hub, served):
    from attnviz.app import ui

    at = pretrained_app
    assert any(c.value == ui.DOWNLOADS_OFF for c in at.caption)
    assert any("| test_resnet | r160_in1k | 0.5 M |" in m.value for m in at.markdown)
    at.selectbox(key="pretrained-name").set_value(NAME).run()
    button = at.button(key="pretrained-load")
    assert button.disabled and button.label.startswith("Download (")
    assert hub.seen() == []

    hub.files[SAFETENSORS] = served[0]  # fetched by an operator (attnviz fetch) into the server's cache
    r = _cli(tmp_path, hub.url, "fetch", NAME)
    assert r.returncode == 0, r.stderr
    at.run()
    button = at.button(key="pretrained-load")
    assert not button.disabled and button.label == "Load"
    button.click().run()
    assert not at.exception and not at.error
    assert any(f"Loaded timm:{NAME} (ImageNet)." in s.value for s in at.success)
    assert len(hub.seen("GET")) == 1  # the operator's fetch; the page asked for nothing
