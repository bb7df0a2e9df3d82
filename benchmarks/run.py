"""``python -m benchmarks.run [--quick] [--models DIR] [--json OUT] [--threads N]``

Prints a header naming the machine, then a Markdown table: figure, measured value,
target, met?, note. Every value is the median of repeated runs. Exits 1 if a figure
could not be measured (it says why in its row); a row skipped because Chromium is
missing is not a failure.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch

from .compute import compute_rows
from .images import default_sample, variants
from .load import load_rows, load_session, skipped_load_rows
from .page import browser_session, chromium_missing, page_rows, skipped_page_rows
from .report import Row, machine, machine_line, markdown, skipped, write_json
from .scale import scale_rows
from .weights import ModelSet, choose_models, self_attention_model


@dataclass(frozen=True)
class Settings:
    """How much to repeat: the full run, or the quick one that only proves it works."""

    pairs: int  # interleaved (bare, measured) pairs per model, rows 1-2 (x3 for row 3)
    clicks: int  # row 4
    page_images: int  # rows 4-5: distinct uploads
    scale_images: int  # row 7
    scale_reps: int  # row 7: runs of each configuration
    hover_positions: int  # row 4: pointer positions in the hover explorer
    load_sessions: int  # row 8: browser sessions at once
    load_clicks: int  # row 8: clicks per session


FULL = Settings(pairs=100, clicks=10, page_images=20, scale_images=200, scale_reps=3, hover_positions=100,
                load_sessions=8, load_clicks=5)
QUICK = Settings(pairs=5, clicks=3, page_images=3, scale_images=20, scale_reps=1, hover_positions=10,
                 load_sessions=2, load_clicks=2)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m benchmarks.run", description=__doc__.split("\n\n")[1])
    p.add_argument("--quick", action="store_true",
                   help="few repetitions, 20 images for row 7, 3 clicks and 3 uploads (proves the script works)")
    p.add_argument("--models", type=Path, metavar="DIR", help="measure the weights pairs in DIR")
    p.add_argument("--json", type=Path, metavar="OUT", help="also write every row and its raw samples here")
    p.add_argument("--threads", type=int,
                   help="torch threads in total, here, in the app and in the CLI runs "
                        "(default: torch's default; 1 with --quick, to stay light on a shared machine)")
    p.add_argument("--rows", type=lambda t: {int(g) for g in t.split(",")}, default=set(range(1, 9)),
                   metavar="N,N", help="measure only these rows (each group runs whole: 1-3, 4-6, 7, 8); "
                   "default: all")
    return p.parse_args(argv)


def set_threads(threads: int) -> None:
    """Use ``threads`` here, and pass them on to every process started later."""
    torch.set_num_threads(threads)
    os.environ["OMP_NUM_THREADS"] = os.environ["MKL_NUM_THREADS"] = str(threads)


def measure(what: str, fn: Callable[[], list[Row]], failed: Callable[[str], list[Row]],
            errors: list[str]) -> list[Row]:
    """``fn()``'s rows, or if it raises, ``failed(reason)``'s rows and the error noted in
    ``errors``: one broken figure must not hide the others."""
    print(f"benchmarks: {what}...", file=sys.stderr, flush=True)
    try:
        return fn()
    except Exception as exc:  # reported in the table and on stderr, and the exit status is 1
        traceback.print_exc(file=sys.stderr)
        errors.append(f"{what}: {type(exc).__name__}: {exc}")
        return failed(f"failed: {type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}")


def load_rows_or_why(models: ModelSet, settings: Settings, scratch: Path, errors: list[str],
                     missing: str | None) -> list[Row]:
    """Row 8: ``settings.load_sessions`` browser sessions at once against one server."""
    sa_model = self_attention_model(models.names)
    if missing or sa_model is None:
        return skipped_load_rows(missing or "no self-attention model")
    images = variants(settings.load_sessions, scratch / "load-images", seed=3)
    return measure(f"row 8 ({settings.load_sessions} concurrent sessions)",
                   lambda: load_rows(load_session(images, settings.load_clicks, sa_model)), skipped_load_rows, errors)


def run_all(models: ModelSet, settings: Settings, threads: int, scratch: Path, errors: list[str],
            groups: set[int] = frozenset(range(1, 9))) -> list[Row]:
    """Rows 1-8 in order, of those whose group is in ``groups`` (1-3, 4-6 run together)."""
    rows: list[Row] = []
    if groups & {1, 2, 3}:
        rows += measure("rows 1-3 (capture, analysis, query)",
                        lambda: compute_rows(models.names, default_sample().read_bytes(), settings.pairs),
                        lambda why: [skipped(g, f, "ratio", why) for g, f in
                                     ((1, "capture overhead"), (2, "analysis cost"), (3, "query cost"))], errors)
        if not any(r.group == 3 for r in rows):
            rows.append(skipped(3, "query cost", "ratio", "no self-attention model among the models measured", 0.02))

    missing = chromium_missing()
    if groups & {4, 5, 6} and missing:
        rows += skipped_page_rows(missing)
    elif groups & {4, 5, 6}:
        *page_images, hover_image = variants(settings.page_images + 1, scratch / "page-images", seed=1)
        rows += measure("rows 4-6 (the app in Chromium)",
                        lambda: page_rows(browser_session(page_images, settings.clicks, hover_image,
                                                          settings.hover_positions)),
                        skipped_page_rows, errors)

    if 7 in groups:
        scale_model = self_attention_model(models.names) or models.names[0]
        scale_images = variants(settings.scale_images, scratch / "scale-images", seed=2)
        rows += measure(f"row 7 (attnviz explain over {len(scale_images)} images)",
                        lambda: scale_rows(scale_images, scale_model, threads, settings.scale_reps,
                                           scratch / "explain"),
                        lambda why: [skipped(7, "explain throughput", "img/s", why)], errors)
    if 8 in groups:
        rows += load_rows_or_why(models, settings, scratch, errors, missing)
    return rows


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    settings = QUICK if args.quick else FULL
    threads = args.threads or (1 if args.quick else torch.get_num_threads())
    set_threads(threads)
    m = machine()
    errors: list[str] = []
    with tempfile.TemporaryDirectory(prefix="attnviz-bench-") as tmp:
        scratch = Path(tmp)
        models = choose_models(args.models, scratch)
        rows = run_all(models, settings, threads, scratch, errors, args.rows)
    mode = "quick (few repetitions: proves the script works; do not quote these numbers)" if args.quick else "full"
    print(f"# attnviz benchmarks, {mode} mode\n")
    print(machine_line(m) + ".  ")
    print(f"Models: {', '.join(models.names)} ({models.source}).  ")
    if models.random:
        print("Random weights were used (no trained weights found): timings do not depend on weight values.  ")
    print("Ratios are medians of per-pair ratios to a bare forward pass timed right next to the measured call.\n")
    print(markdown(rows))
    if args.json:
        write_json(args.json, rows, {"machine": m, "quick": args.quick, "threads": threads, "models": models.names,
                                     "model_source": models.source, "random_weights": models.random,
                                     "errors": errors})
    for e in errors:
        print(f"benchmarks: error: {e}", file=sys.stderr)
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())
