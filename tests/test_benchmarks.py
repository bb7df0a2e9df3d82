"""The benchmark script still works: ``python -m benchmarks.run --quick`` runs every
figure end to end and reports it. This proves the script, not the speed: no timing is
asserted here (quick-mode numbers are too few to mean anything, and the machine running
the tests may be busy). The timings themselves come from the full run."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from benchmarks.page import chromium_missing

ROOT = Path(__file__).resolve().parent.parent
GROUPS = range(1, 9)


def _numeric(rows: list[dict], group: int) -> bool:
    mine = [r for r in rows if r["group"] == group]
    return bool(mine) and all(isinstance(r["value"], (int, float)) for r in mine)


@pytest.mark.timeout(660)
def test_quick_mode_runs_and_reports_every_figure(tmp_path):
    out = tmp_path / "bench.json"
    proc = subprocess.run([sys.executable, "-m", "benchmarks.run", "--quick", "--json", str(out)], cwd=ROOT,
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, f"stdout:\n{proc.stdout}\nstderr:\n{proc.stderr[-4000:]}"

    table = [line for line in proc.stdout.splitlines() if line.startswith("| ")]
    assert table[0] == "| # | figure | value | target | met? | note |"
    assert {int(line.split("|")[1]) for line in table[1:]} == set(GROUPS)  # the "|---|" line is not in table
    assert proc.stdout.startswith("# attnviz benchmarks, quick")
    assert "Machine: " in proc.stdout

    doc = json.loads(out.read_text())
    rows = doc["rows"]
    assert doc["quick"] is True and doc["errors"] == []
    for group in (1, 2, 3, 7):
        assert _numeric(rows, group), f"row {group} has no measured value: {rows}"
    reason = chromium_missing()
    for group in (4, 5, 6, 8):
        if reason is None:
            assert _numeric(rows, group), f"row {group} has no measured value: {rows}"
        else:
            assert all(r["note"].startswith("skipped") for r in rows if r["group"] == group)


@pytest.mark.timeout(300)
def test_rows_measures_only_the_groups_asked_for(tmp_path):
    out = tmp_path / "bench.json"
    proc = subprocess.run([sys.executable, "-m", "benchmarks.run", "--quick", "--rows", "7", "--json", str(out)],
                          cwd=ROOT, capture_output=True, text=True, timeout=280)
    assert proc.returncode == 0, proc.stderr[-2000:]
    rows = json.loads(out.read_text())["rows"]
    assert {r["group"] for r in rows} == {7} and _numeric(rows, 7)


def test_the_interventions_benchmark_reports_every_panel(capsys, monkeypatch):
    import torch

    from attnviz.app import ui
    from benchmarks import interventions

    monkeypatch.setattr(sys, "argv", ["benchmarks.interventions", "--reps", "1"])
    threads = torch.get_num_threads()
    try:
        interventions.main()
    finally:
        torch.set_num_threads(threads)
    rows = [line for line in capsys.readouterr().out.splitlines() if line.startswith("| ") and " ms |" in line]
    offered = sum(2 * len(ui.interventions_for(v, v == "se")) for v in interventions.VIEWS.values())
    # every intervention twice (whole model, last block), two drill-downs, a Grad-CAM per model
    assert len(rows) == offered + 2 + len(interventions.VIEWS)
    assert sum("Grad-CAM" in r for r in rows) == len(interventions.VIEWS)


def test_axial_benchmark_quick_mode_reports_the_three_ratios(tmp_path):
    # Proves the script, not the speed: the counted weights are exact, the timings are not asserted.
    out, png = tmp_path / "axial.json", tmp_path / "axial.png"
    proc = subprocess.run([sys.executable, "-m", "benchmarks.axial", "--quick", "--json", str(out), "--png", str(png)],
                          cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-4000:]
    assert "| 14×14 | 196 |" in proc.stdout and "| 28×28 | 784 |" in proc.stdout
    results = json.loads(out.read_text())["results"]
    for r in results:
        n, side = r["tokens"], r["side"]
        assert r["full_weights"] == 2 * n * n and r["axial_weights"] == 2 * n * 2 * side  # heads N^2, heads N (H+W)
        assert r["time_ratio"] > 0 and r["full_peak_mb"] > 0 and r["axial_peak_mb"] > 0
    assert png.stat().st_size > 10_000
