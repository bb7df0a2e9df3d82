"""Rows of the benchmark table, the machine they ran on, and how both are written out."""

from __future__ import annotations

import json
import os
import platform
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch

UNITS = {"ratio": "×", "ms": " ms", "s": " s", "GB": " GB", "img/s": " img/s", "count": ""}


@dataclass
class Row:
    """One figure: ``value`` in ``unit`` (``None`` when skipped), at most ``target``
    when there is one. ``samples`` are the raw measurements the value is the median of."""

    group: int
    figure: str
    value: float | None
    unit: str
    target: float | None = None
    note: str = ""
    samples: list[float] = field(default_factory=list)

    @property
    def met(self) -> bool | None:
        if self.value is None or self.target is None:
            return None
        return self.value <= self.target


def skipped(group: int, figure: str, unit: str, reason: str, target: float | None = None) -> Row:
    """A row that could not be measured here, saying why."""
    return Row(group, figure, None, unit, target, f"skipped: {reason}")


def fmt(value: float | None, unit: str) -> str:
    """``1.03×``, ``212 ms``, ``0.84 GB``...; ``—`` for no value."""
    if value is None:
        return "—"
    digits = 3 if unit == "ratio" else 2 if unit in ("GB", "s") else 0 if unit == "count" or value >= 100 else 1
    return f"{value:.{digits}f}{UNITS[unit]}"


def cpu_model() -> str:
    """The CPU's model name from /proc/cpuinfo (the platform's name where there is none)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.lower().startswith(("model name", "hardware", "cpu model")):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine() -> dict[str, object]:
    """What the numbers depend on: CPU, cores, torch and its threads, load at the start."""
    try:
        load = float(Path("/proc/loadavg").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        load = None
    return {"cpu": cpu_model(), "cores": os.cpu_count(), "usable_cores": len(os.sched_getaffinity(0)),
            "torch": torch.__version__, "torch_threads": torch.get_num_threads(), "load_avg_1min": load,
            "python": platform.python_version()}


def machine_line(m: dict[str, object]) -> str:
    return (f"Machine: {m['cpu']}, {m['cores']} cores ({m['usable_cores']} usable), torch {m['torch']}, "
            f"torch threads: {m['torch_threads']} (also OMP_NUM_THREADS of the app and CLI runs), "
            f"Python {m['python']}, load average {m['load_avg_1min']} at start")


def markdown(rows: list[Row]) -> str:
    """The table: figure, measured value, target, met?, note."""
    lines = ["| # | figure | value | target | met? | note |", "|---|---|---|---|---|---|"]
    for r in rows:
        target = f"≤ {fmt(r.target, r.unit)}" if r.target is not None else "—"
        met = {True: "yes", False: "no", None: "—"}[r.met]
        note = r.note.replace("|", "\\|")
        lines.append(f"| {r.group} | {r.figure} | {fmt(r.value, r.unit)} | {target} | {met} | {note} |")
    return "\n".join(lines)


def write_json(path: Path, rows: list[Row], header: dict[str, object]) -> None:
    """Every row with its raw samples, plus ``header`` (machine, mode, models)."""
    doc = {**header, "rows": [{**asdict(r), "met": r.met} for r in rows]}
    path.write_text(json.dumps(doc, indent=2) + "\n")
