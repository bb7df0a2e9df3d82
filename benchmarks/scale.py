"""Row 7: ``attnviz explain --no-png --quiet`` over many images, as 1 and 2 processes.

``explain`` has no ``--workers`` option, so a worker is a separate ``python -m attnviz
explain`` process over its own share of the images, with the threads split between
them (OMP_NUM_THREADS = MKL_NUM_THREADS = threads // processes). Steady-state speed is
read from outside, from when each process wrote its outputs: a process's rate is
(images - 1) / (last .json written - first .json written), which leaves out its
start-up (imports, model load) and its first, warm-up image."""

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
    """One run of ``processes`` explain processes over ``images`` images."""

    processes: int
    threads: int
    images: int
    wall_s: float
    steady_rate: float  # images/s, summed over processes, start-up excluded

    @property
    def wall_rate(self) -> float:
        """images/s including process start-up."""
        return self.images / self.wall_s


def _shares(items: list[Path], parts: int) -> list[list[Path]]:
    """``items`` split into ``parts`` contiguous, disjoint, near-equal shares."""
    k, extra = divmod(len(items), parts)
    bounds = [i * k + min(i, extra) for i in range(parts + 1)]
    return [items[a:b] for a, b in zip(bounds, bounds[1:])]


def _steady_rate(out: Path) -> float:
    """images/s of one process from its outputs' write times (first image excluded)."""
    times = sorted(p.stat().st_mtime for p in out.glob("*.json"))
    if len(times) < 2 or times[-1] <= times[0]:
        raise RuntimeError(f"too few outputs in {out} to measure a rate (need 2 images per process)")
    return (len(times) - 1) / (times[-1] - times[0])


def explain_run(images: list[Path], model: str, processes: int, threads: int, out: Path) -> ScaleRun:
    """Run ``processes`` explain processes in parallel over disjoint shares of ``images``."""
    per_process = max(1, threads // processes)
    env = {**os.environ, "OMP_NUM_THREADS": str(per_process), "MKL_NUM_THREADS": str(per_process)}
    outs = [out / f"process{i}" for i in range(processes)]
    t0 = time.perf_counter()
    procs = [subprocess.Popen([sys.executable, "-m", "attnviz", "explain", *map(str, share), "--model", model,
                               "--out", str(o), "--no-png", "--quiet"],
                              cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
             for share, o in zip(_shares(images, processes), outs)]
    errors = [p.communicate()[1] for p in procs]
    wall = time.perf_counter() - t0
    for p, err in zip(procs, errors):
        if p.returncode != 0:
            raise RuntimeError(f"attnviz explain exited with {p.returncode}: {err.strip()[-500:]}")
    rate = sum(_steady_rate(o) for o in outs)
    shutil.rmtree(out)  # the tensors of hundreds of images add up to gigabytes
    return ScaleRun(processes, per_process, len(images), wall, rate)


def scale_rows(images: list[Path], model: str, threads: int, reps: int, scratch: Path) -> list[Row]:
    """Row 7: images/s with 1 process (with and without start-up) and with 2 processes;
    each the median of ``reps`` runs."""
    runs: dict[int, list[ScaleRun]] = {1: [], 2: []}
    for rep in range(reps):
        for processes in (1, 2):
            runs[processes].append(explain_run(images, model, processes, threads, scratch / f"rep{rep}-p{processes}"))
    n = len(images)
    one, two = runs[1], runs[2]
    one_rate = statistics.median(r.steady_rate for r in one)
    two_rate = statistics.median(r.steady_rate for r in two)
    what = f"attnviz explain --model {model} --no-png --quiet, {n} generated PNGs"
    return [
        Row(7, "explain, 1 process, with start-up", statistics.median(r.wall_rate for r in one), "img/s", None,
            f"{what}; {n} images ÷ wall time of the whole process, {one[0].threads} thread(s); "
            f"wall {statistics.median(r.wall_s for r in one):.1f} s; median of {reps}",
            [r.wall_rate for r in one]),
        Row(7, "explain, 1 process, steady", one_rate, "img/s", None,
            f"same run: (images − 1) ÷ (last − first output written), start-up and first image excluded; "
            f"median of {reps}", [r.steady_rate for r in one]),
        Row(7, "explain, 2 processes, steady", two_rate, "img/s", None,
            f"2 processes over disjoint halves at once, {two[0].threads} thread(s) each; sum of their steady rates; "
            f"{two_rate / one_rate:.2f}× 1 process; with start-up "
            f"{statistics.median(r.wall_rate for r in two):.1f} img/s; median of {reps}",
            [r.steady_rate for r in two]),
    ]
