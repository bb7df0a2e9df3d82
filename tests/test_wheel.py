"""The package as a user installs it: a wheel, built without warnings, that carries the
shipped weights, the sample images and the app's frontend, and works unpacked far from
this repository."""

from __future__ import annotations

import subprocess
import sys
import tomllib
import zipfile
from pathlib import Path

from setuptools import find_namespace_packages

from attnviz.models import SHIPPED

ROOT = Path(__file__).resolve().parent.parent
# This machine's pip configuration names local wheel folders that may be absent; pip
# says so on every call. Those lines are about the machine, not about the package.
PIP_CONFIG_NOISE = "is ignored: it is neither a file nor a directory"


def test_the_wheel_builds_quietly_and_works_outside_the_repository(tmp_path):
    dist = tmp_path / "dist"
    r = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-w", str(dist),
                        str(ROOT)], capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr
    said = [line for line in (r.stdout + r.stderr).splitlines() if PIP_CONFIG_NOISE not in line]
    assert not [line for line in said if "warn" in line.lower()], "\n".join(said)
    (wheel,) = dist.glob("attnviz-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    shipped = sorted(n for n in names if n.startswith("attnviz/shipped/") and n.endswith(".safetensors"))
    assert shipped == sorted(f"attnviz/shipped/{name}.safetensors" for name in SHIPPED)  # not weights/seeds/
    assert all(n.removesuffix(".safetensors") + ".json" in names for n in shipped)
    assert "attnviz/shipped/se_resnet18.profile.json" in names
    assert "attnviz/app/live_figure_frontend/index.html" in names and "attnviz/samples/LICENSES.md" in names
    assert {f"attnviz/app/explorer_frontend/explorer.{ext}" for ext in ("html", "css", "js")} <= set(names)
    assert {"attnviz/app/click_frontend/index.html", "attnviz/app/click_frontend/main.js"} <= set(names)
    assert not [n for n in names if n.startswith(("tests/", "benchmarks/", "docs/")) or "__pycache__" in n]

    site = tmp_path / "site"
    zipfile.ZipFile(wheel).extractall(site)
    code = """
import sys, attnviz
from pathlib import Path

from attnviz.models import SHIPPED
from attnviz.app.service import ModelRegistry, sample_images
from attnviz.weights import SHIPPED_DIR
site = Path(sys.argv[1]).resolve()
assert Path(attnviz.__file__).resolve().is_relative_to(site), attnviz.__file__
assert SHIPPED_DIR.resolve().is_relative_to(site) and sample_images()
from attnviz.app import explorer
assert explorer.FRONTEND.resolve().is_relative_to(site) and (explorer.FRONTEND / "explorer.js").is_file()
registry = ModelRegistry()
for name in SHIPPED:
    a = attnviz.analyze(next(iter(sample_images().values())), attnviz.load_model(name))
    print(name, a.top_k(1)[0][0], registry.handle(name).profile is not None)
"""
    out = subprocess.run([sys.executable, "-c", code, str(site)], cwd=tmp_path, capture_output=True, text=True,
                         env={"PYTHONPATH": str(site), "PATH": "/usr/bin:/bin", "HOME": str(tmp_path)}, timeout=600)
    assert out.returncode == 0, out.stderr
    lines = dict(line.split(" ", 1) for line in out.stdout.splitlines())
    assert set(lines) == set(SHIPPED)
    assert lines["se_resnet18"].endswith("True")  # the SE profile travelled with its weights


def test_the_wheel_lists_every_package_of_the_source_tree():

    listed = set(tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"])
    found = {p for p in find_namespace_packages(str(ROOT), include=["attnviz*"]) if "__pycache__" not in p}
    assert listed == found | {"attnviz.shipped"}  # the shipped weights: weights/ at the top, mapped into the package
    assert (ROOT / "weights" / "resnet18.safetensors").is_file() and not (ROOT / "attnviz" / "shipped").exists()


def test_the_metadata_asks_for_what_the_code_uses():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert project["requires-python"] == ">=3.11"  # numpy 2.4 and Pillow 13 (requirements.txt) need 3.11
    assert "FROM python:3.11" in (ROOT / "Dockerfile").read_text()
    pins = dict(line.split("#")[0].strip().split("==") for line in (ROOT / "requirements.txt").read_text().splitlines()
                if "==" in line)
    app = next(d for d in project["optional-dependencies"]["app"] if d.startswith("streamlit"))
    assert app == "streamlit>=1.67" and pins["streamlit"] >= "1.67"  # st.App and components v2
    assert "Python 3.11+" in (ROOT / "README.md").read_text()
