"""What the app's intervention and drill-down panels wait for on the server (issue 21):

    .venv/bin/python -m benchmarks.interventions [--reps N] [--threads N]

For each shipped model with channel gates or self-attention, the median time of
``attnviz.intervene`` (JPEG bytes of the default sample; decoding, two forward passes)
for every intervention its view offers, on the whole model and on its last block, and of
``attnviz.features.block_features`` plus the drill-down's two figures, and of the Grad-CAM
drawn beside the attention (``attnviz.cam.grad_cam`` of the top class: what a view waits
for the first time it opens on an image; cached afterwards). The browser's
share (rerun, drawing) is measured by tests/test_browser.py, which prints it.
"""

from __future__ import annotations

import argparse
import os
import statistics

import torch

import attnviz
from attnviz import figures
from attnviz.app import ui
from attnviz.app.service import sample_images
from attnviz.cam import grad_cam
from attnviz.features import block_features, gated_modules

from .timing import timed

VIEWS = {"se_resnet18": "se", "cbam_resnet18": "cbam", "sa_resnet18": "self_attn"}


def median_ms(fn, reps: int) -> float:
    fn()  # warm-up
    return statistics.median(timed(fn) for _ in range(reps)) * 1000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reps", type=int, default=10)
    parser.add_argument("--threads", type=int, default=1, help="torch threads (default 1: a shared machine)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    data = next(iter(sample_images().values())).read_bytes()
    print(f"torch threads: {torch.get_num_threads()}, load average at start: {os.getloadavg()[0]:.2f}")
    print("| model | what | where | median |\n|---|---|---|---|")
    for name, view in VIEWS.items():
        model = attnviz.load_model(name)
        a = attnviz.analyze(data, model)
        last = figures.short_name(list(a.se or a.cbam_channel or a.self_attn)[-1])
        for what in ui.interventions_for(view, has_profile=view == "se"):
            for where in (None, last):
                ms = median_ms(lambda: attnviz.intervene(data, model, what, where), args.reps)
                print(f"| {name} | intervene {what} | {where or ui.WHOLE_MODEL} | {ms:.0f} ms |")
        for module in list(gated_modules(model))[-1:]:
            def drill() -> None:
                f = block_features(data, model, module)
                top, bottom = f.extremes(8)
                figures.channel_maps(a.display, {"before": f.before[0], "after": f.after[0]}, extent=a.image_size)
                figures.channel_thumbnails(a.display, f.before[top + bottom], [""] * 16, extent=a.image_size)
            print(f"| {name} | drill-down (capture + 2 figures) | {module} | {median_ms(drill, args.reps):.0f} ms |")
        cam_ms = median_ms(lambda: grad_cam(data, model), args.reps)
        print(f"| {name} | Grad-CAM of the top class (first open of a view) | last stage | {cam_ms:.0f} ms |")


if __name__ == "__main__":
    main()
