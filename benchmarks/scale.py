"""Row 7: ``attnviz explain --no-png --quiet`` over many images, with ``--workers`` 1 and 2.

One ``python -m attnviz explain`` process over all the images; with ``--workers N`` it
analyses N images at once on one shared model, the torch threads split between them.
Steady-state speed is read from outside, from when the outputs were written:
(images - 1) / (last .json written - first .json written), which leaves out start-up
(imports, model load) and the first, warm-up image."""

from __future__ import annotations

import os
import shutil
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from .report import Row

ROOT = Path(__file__).resolve().parent.parent


@dataclass
class ScaleRun:
    """One ``explain --workers workers`` run over ``images`` images."""

    workers: int
    threads: int
    images: int
    wall_s: float
    steady_rate: float  # images/s, start-up excluded

    @property
    def wall_rate(self) -> float:
        """images/s including process start-up."""
        return self.images / self.wall_s


def _steady_rate(out: Path) -> float:
    """images/s from the outputs' write times (first image excluded)."""
    times = sorted(p.stat().st_mtime for p in out.glob("*.json"))
    if len(times) < 2 or times[-1] <= times[0]:
        raise RuntimeError(f"too few outputs in {out} to measure a rate (need 2 images)")
    return (len(times) - 1) / (times[-1] - times[0])


def explain_run(images: list[Path], model: str, workers: int, threads: int, out: Path) -> ScaleRun:
    """One ``attnviz explain --workers workers`` process over ``images``, ``threads`` torch threads in all."""
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)}
    t0 = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "attnviz", "explain", *map(str, images), "--model", model,
                           "--out", str(out), "--no-png", "--quiet", "--workers", str(workers)],
                          cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        raise RuntimeError(f"attnviz explain exited with {proc.returncode}: {proc.stderr.strip()[-500:]}")
    rate = _steady_rate(out)
    shutil.rmtree(out)  # the tensors of hundreds of images add up to gigabytes
    return ScaleRun(workers, max(1, threads // workers), len(images), wall, rate)


def scale_rows(images: list[Path], model: str, threads: int, reps: int, scratch: Path) -> list[Row]:
    """Row 7: images/s with 1 worker (with and without start-up) and with 2 workers;
    each the median of ``reps`` runs."""
    runs: dict[int, list[ScaleRun]] = {1: [], 2: []}
    for rep in range(reps):
        for workers in (1, 2):
            runs[workers].append(explain_run(images, model, workers, threads, scratch / f"rep{rep}-w{workers}"))
    n = len(images)
    one, two = runs[1], runs[2]
    one_rate = statistics.median(r.steady_rate for r in one)
    two_rate = statistics.median(r.steady_rate for r in two)
    what = f"attnviz explain --model {model} --no-png --quiet, {n} generated PNGs"
    return [
        Row(7, "explain, 1 worker, with start-up", statistics.median(r.wall_rate for r in one), "img/s", None,
            f"{what}; {n} images ÷ wall time of the whole process, {one[0].threads} thread(s); "
            f"wall {statistics.median(r.wall_s for r in one):.1f} s; median of {reps}",
            [r.wall_rate for r in one]),
        Row(7, "explain, 1 worker, steady", one_rate, "img/s", None,
            f"same run: (images − 1) ÷ (last − first output written), start-up and first image excluded; "
            f"median of {reps}", [r.steady_rate for r in one]),
        Row(7, "explain --workers 2, steady", two_rate, "img/s", None,
            f"2 images at once on one model, {two[0].threads} thread(s) each; "
            f"{two_rate / one_rate:.2f}× 1 worker; with start-up "
            f"{statistics.median(r.wall_rate for r in two):.1f} img/s; median of {reps}",
            [r.steady_rate for r in two]),
    ]
