"""``python -m benchmarks.axial [--quick] [--json OUT] [--png OUT] [--threads N]``

Full self-attention (``SelfAttention2d``) against axial attention (``AxialAttention2d``)
on one feature map of 14x14, 28x28, 56x56 and 112x112 cells, the same layer size at
every side (64 channels, 2 heads: ``sa_resnet18``'s stride-8 layer), batch 1, forward
in ``torch.inference_mode``. Three figures per side, each as full ÷ axial:

- **time** of one forward: the median of interleaved (full, axial) pairs
  (``timing.paired``), so that a shared machine's drift hits both;
- **peak memory** of one forward: the most bytes glibc's allocator had handed out
  (``mallinfo2``: ``uordblks + hblkhd``, heap and mmapped chunks) above the level before
  the call, read after every aten operation of the forward (a ``TorchDispatchMode``), so
  the largest tensors alive at once, including what an operation allocated and kept;
  scratch memory freed inside one operation is not seen. Deterministic: one forward each,
  after a warm-up (the full layer's cached N x N distance table, made on the first call
  at a grid size and kept, is not counted: its size is in the note);
- **attention weights held**: the elements of the matrices the layer's softmaxes output,
  counted from an ``attnviz.capture`` (full: heads N^2; axial: heads N (H + W)).

A side whose full layer would not fit in half the memory available now is skipped and
says so. ``--png`` draws the three figures against the side (plotly, log scales).
"""

from __future__ import annotations

import argparse
import ctypes
import json
import statistics
import sys
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from torch import nn
from torch.utils._python_dispatch import TorchDispatchMode

from attnviz.capture import capture
from attnviz.layers import AxialAttention2d, SelfAttention2d

from .report import machine
from .timing import paired

CHANNELS, HEADS = 64, 2
SIDES = (14, 28, 56, 112)
FULL_REPS = {14: 100, 28: 50, 56: 20, 112: 5}
QUICK_SIDES, QUICK_REPS = (14, 28), 3


class _MallInfo2(ctypes.Structure):
    _fields_ = [(name, ctypes.c_size_t) for name in ("arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks",
                                                     "fsmblks", "uordblks", "fordblks", "keepcost")]


def _allocated_bytes() -> Callable[[], int]:
    """A function giving the bytes glibc's malloc has handed out now (heap + mmapped)."""
    libc = ctypes.CDLL("libc.so.6")
    libc.mallinfo2.restype = _MallInfo2

    def allocated() -> int:
        info = libc.mallinfo2()
        return info.uordblks + info.hblkhd

    return allocated


class PeakAllocated(TorchDispatchMode):
    """Inside the block, ``peak`` is the most bytes allocated above the level at entry,
    read after every aten operation."""

    def __init__(self, allocated: Callable[[], int]) -> None:
        super().__init__()
        self._allocated = allocated
        self.peak = 0

    def __enter__(self):
        self._base = self._allocated()
        return super().__enter__()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        self.peak = max(self.peak, self._allocated() - self._base)
        return out


@dataclass
class SideResult:
    side: int
    tokens: int
    full_ms: float | None = None
    axial_ms: float | None = None
    time_ratio: float | None = None
    full_peak_mb: float | None = None
    axial_peak_mb: float | None = None
    memory_ratio: float | None = None
    full_weights: int = 0
    axial_weights: int = 0
    weights_ratio: float = 0.0
    note: str = ""


def _weights_held(layer: nn.Module, x: torch.Tensor) -> int:
    with torch.inference_mode(), capture(layer) as maps:
        layer(x)
    return sum(t.numel() for t in maps.values())


def _peak_mb(layer: nn.Module, x: torch.Tensor, allocated: Callable[[], int]) -> float:
    with torch.inference_mode():
        layer(x)  # warm-up: the full layer makes its distance table here
        with PeakAllocated(allocated) as peak:
            layer(x)
    return peak.peak / 2**20


def _available_bytes() -> int:
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemAvailable:"):
            return int(line.split()[1]) * 1024
    return 0


def measure_side(side: int, reps: int, allocated: Callable[[], int]) -> SideResult:
    torch.manual_seed(0)
    full, axial = SelfAttention2d(CHANNELS, HEADS).eval(), AxialAttention2d(CHANNELS, HEADS).eval()
    x = torch.randn(1, CHANNELS, side, side)
    n = side * side
    r = SideResult(side, n)
    r.full_weights = HEADS * n * n
    r.axial_weights = _weights_held(axial, x)
    assert r.axial_weights == HEADS * n * (side + side)
    r.weights_ratio = r.full_weights / r.axial_weights
    table_mb = n * n * 4 / 2**20
    need = 4 * HEADS * n * n * 4 + n * n * 4  # logits, their position term, the softmax: about 3x heads N^2 floats
    if need > _available_bytes() / 2:
        r.note = f"full attention skipped: needs about {need / 2**30:.1f} GiB, half of what is available is less"
        r.axial_peak_mb = _peak_mb(axial, x, allocated)
        return r
    assert _weights_held(full, x) == r.full_weights
    r.full_peak_mb, r.axial_peak_mb = _peak_mb(full, x, allocated), _peak_mb(axial, x, allocated)
    r.memory_ratio = r.full_peak_mb / r.axial_peak_mb
    with torch.inference_mode():
        pairs = paired(lambda: axial(x), lambda: full(x), reps, warmup=1)
    r.full_ms = statistics.median(pairs.other) * 1000
    r.axial_ms = pairs.base_ms
    r.time_ratio = pairs.ratio
    r.note = f"{reps} interleaved pairs; full layer also keeps a {table_mb:,.1f} MB distance table per grid size"
    return r


def _f(value: float | None, digits: int = 1) -> str:
    return "—" if value is None else f"{value:,.{digits}f}"


def markdown(results: list[SideResult]) -> str:
    lines = ["| map | N | forward, full | forward, axial | time full ÷ axial | peak, full | peak, axial "
             "| memory full ÷ axial | weights, full | weights, axial | weights full ÷ axial |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in results:
        lines.append(f"| {r.side}×{r.side} | {r.tokens:,} | {_f(r.full_ms)} ms | {_f(r.axial_ms, 2)} ms "
                     f"| {_f(r.time_ratio)}× | {_f(r.full_peak_mb)} MB | {_f(r.axial_peak_mb, 2)} MB "
                     f"| {_f(r.memory_ratio)}× | {r.full_weights:,} | {r.axial_weights:,} | {r.weights_ratio:.1f}× |")
    return "\n".join(lines)


def figure(results: list[SideResult]):
    """The three figures against the side of the map, full and axial, log scales."""
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    fig = make_subplots(rows=1, cols=3, subplot_titles=("time of one forward (ms)", "peak memory (MB)",
                                                        "attention weights held"))
    style = {"full": dict(color="#d62728"), "axial": dict(color="#1f77b4")}
    for col, attr in enumerate(("ms", "peak_mb", "weights"), start=1):
        for kind in ("full", "axial"):
            pts = [(r.side, getattr(r, f"{kind}_{attr}")) for r in results if getattr(r, f"{kind}_{attr}") is not None]
            fig.add_trace(go.Scatter(x=[f"{s}×{s}" for s, _ in pts], y=[v for _, v in pts], mode="lines+markers",
                                     name=f"{kind} attention", line=style[kind], showlegend=col == 1), row=1, col=col)
        fig.update_yaxes(type="log", row=1, col=col)
    fig.update_xaxes(title_text="feature map")
    fig.update_layout(width=1100, height=380, margin=dict(l=50, r=20, t=60, b=50),
                      title=f"Full vs axial attention, one layer ({CHANNELS} channels, {HEADS} heads), batch 1, CPU",
                      legend=dict(orientation="h", y=-0.25))
    return fig


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.axial", description=__doc__.split("\n\n")[1])
    p.add_argument("--quick", action="store_true", help="14x14 and 28x28 only, 3 pairs (proves the script works)")
    p.add_argument("--json", type=Path, metavar="OUT", help="also write the results here")
    p.add_argument("--png", type=Path, metavar="OUT", help="draw the three figures into this PNG")
    p.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    allocated = _allocated_bytes()
    m = machine()
    sides = QUICK_SIDES if args.quick else SIDES
    results = []
    for side in sides:
        print(f"benchmarks.axial: {side}x{side}...", file=sys.stderr, flush=True)
        results.append(measure_side(side, QUICK_REPS if args.quick else FULL_REPS[side], allocated))
    print(f"# Full vs axial attention{', quick' if args.quick else ''}\n\n"
          f"Machine: {m['cpu']}, {m['cores']} cores ({m['usable_cores']} usable), torch {m['torch']}, "
          f"torch threads: {m['torch_threads']}, Python {m['python']}, load average {m['load_avg_1min']} at start\n")
    print(markdown(results))
    for r in results:
        if r.note:
            print(f"\n- {r.side}×{r.side}: {r.note}", end="")
    print()
    if args.json:
        args.json.write_text(json.dumps({"machine": m, "quick": args.quick, "channels": CHANNELS, "heads": HEADS,
                                         "results": [asdict(r) for r in results]}, indent=2) + "\n")
    if args.png:
        figure(results).write_image(str(args.png), scale=1)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
