"""docs/faithfulness.md's tables and docs/img/deletion_curves.png, from the JSON that
``attnviz faithfulness --json`` printed for each model:

    for m in cbam_resnet18 sa_resnet18 se_resnet18 resnet18; do
        python -m attnviz faithfulness imagenette2-224/val --model $m --per-class 5 --json --quiet \\
            > docs/faithfulness/$m.json
    done
    python -m attnviz faithfulness imagenette2-224/val --model cbam_resnet18 --layer layer3.1 --per-class 5 \
        --json --quiet > docs/faithfulness/cbam_resnet18.layer3.1.json   # and sa_resnet18 --layer layer2.1
    python docs/make_faithfulness.py docs/faithfulness/*.json           # the table
    python docs/make_faithfulness.py docs/faithfulness/{cbam,sa,se}_resnet18.json docs/faithfulness/resnet18.json \
        --png docs/img/deletion_curves.png                                # the figure
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

import plotly.graph_objects as go
from plotly.subplots import make_subplots

from attnviz.explain import write_pngs

NAMES = {"cbam_spatial": "CBAM spatial gate", "self_attn": "self-attention received", "grad_cam": "Grad-CAM"}


def _rho(v: dict) -> str:
    if v["mean"] is None:
        return "n/a"
    return f"{v['mean']:.2f}" + (f" ({v['undefined']} flat)" if v["undefined"] else "")


def table(results: list[dict]) -> str:
    rows = ["| model | map | layer (grid) | deletion AUC | random map | map below random | "
            "ρ, layer4 re-initialised | ρ, layer3–4 re-initialised |", "|---|---|---|---|---|---|---|---|"]
    seen = set()
    for r in results:
        for name, m in r["maps"].items():
            if (r["model"], m["layer"]) in seen:  # Grad-CAM again, in a run for another attention layer
                continue
            seen.add((r["model"], m["layer"]))
            grid = "×".join(map(str, m["grid"]))
            rows.append(f"| `{r['model']}` | {NAMES[name]} | `{m['layer']}` ({grid}) | {m['auc']:.3f} | "
                        f"{m['auc_random']:.3f} | {m['below_random']:.0%} | {_rho(m['spearman']['layer4'])} | "
                        f"{_rho(m['spearman']['layer3-4'])} |")
    return "\n".join(rows)


def curves(results: list[dict]) -> go.Figure:
    fig = make_subplots(rows=1, cols=len(results), subplot_titles=[r["model"] for r in results],
                        shared_yaxes=True, horizontal_spacing=0.03)
    colours = {"cbam_spatial": "#e45756", "self_attn": "#4c78a8", "grad_cam": "#54a24b"}
    shown: set[str] = set()
    for i, r in enumerate(results, 1):
        x = [100 * f for f in r["fractions"]]
        grids = {}
        for name, m in r["maps"].items():
            fig.add_trace(go.Scatter(x=x, y=m["curve"], name=NAMES[name], legendgroup=name,
                                     showlegend=name not in shown, line=dict(color=colours[name], width=2)),
                          row=1, col=i)
            shown.add(name)
            grids["×".join(map(str, m["grid"]))] = m["curve_random"]
        for grid, curve in grids.items():  # one random map per grid, shared by the maps on it
            label = f"random map {grid}"
            fig.add_trace(go.Scatter(x=x, y=curve, name=label, legendgroup=label, showlegend=label not in shown,
                                     line=dict(color="#888", width=1.5, dash="dot" if grid == "7×7" else "dash")),
                          row=1, col=i)
            shown.add(label)
    fig.update_xaxes(title="% of pixels blurred, most attended first", range=[0, 100])
    fig.update_yaxes(title="probability of the predicted class", range=[0, 1], row=1, col=1)
    fig.update_layout(height=360, width=1200, margin=dict(l=50, r=10, t=60, b=50),
                      title="Deletion curves, mean over images (grey: a random map on the same grid)",
                      legend=dict(orientation="h", y=-0.25))
    return fig


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("results", nargs="+", type=Path)
    p.add_argument("--png", type=Path)
    args = p.parse_args()
    results = [json.loads(f.read_text()) for f in args.results]
    print(table(results))
    if args.png:
        with tempfile.TemporaryDirectory() as tmp:
            (written,) = write_pngs({"curves": curves(results)}, Path(tmp), "f", width=1200)
            args.png.write_bytes(written.read_bytes())


if __name__ == "__main__":
    main()
