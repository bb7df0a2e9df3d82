"""Pure helpers for the Streamlit front end: what the page says, which interventions a
view offers, and the mapping between the displayed image and the original."""

from __future__ import annotations

from PIL import Image, ImageDraw

from ..attention_quality import HeadQuality
from ..image import display_image
from ..intervene import INTERVENTIONS
from ..kinds import KINDS, kinds_of_view

EXPLAIN = {
    "se": "SE reweights channels only: one gate in 0..1 per channel, the same at every position.",
    "cbam": "CBAM reweights channels, then positions: a gate per channel and an H×W map of where to look.",
    "self_attn": "Self-attention relates points to points: every position takes a weighted mean of all "
                 "positions, so a clicked pixel has its own map over the whole image.",
    "context": "Context attention (timm's GCNet and LambdaNet) pools the whole image with one weight per "
               "position, the same for every query: one map per block (per key for LambdaNet), summing to 1.",
    "axial": "Axial attention looks along lines: each position first takes a weighted mean of its column "
             "(height step), then of its row (width step). The composed map covers the whole image because "
             "every cell of the query's row already holds a mean of its whole column, so each position "
             "(r', c') reaches the query (r, c) through the cell (r, c').",
    "grad_cam": "Above, where each attention module multiplies or mixes the features; below, Grad-CAM of the "
                "same model's last stage: where the features that drive the predicted class's score lie "
                "(min-max scaled, so relative), which need not be the same place.",
    "grad_cam_beside": "Grad-CAM of the same model's last stage for its top class: where the features that drive "
                       "that class's score lie (min-max scaled, so relative). The attention maps show where the "
                       "model's gates multiply or its queries take their information from: not the same question, "
                       "and they need not agree.",
}

BESIDE_LINE = ("Left {left}, right {right}: the same layers of both, on the same absolute 0..1 scale; "
               "Grad-CAM of each below.")

QUALITY_HELP = ("On each head: **entropy** ÷ log N, how evenly a query spreads its attention (1 = evenly over "
                "all N cells, like an average; lower = it looks at a few places); **query-dependence**, how much "
                "the map changes from one clicked pixel to another in this image (0 = the same map wherever you "
                "click). Both are this image's means over every query pixel.")


def uniform_warning(quality: dict[str, list[HeadQuality]]) -> str | None:
    """One plain sentence naming every head, of every layer, that is near uniform (None if none is)."""
    parts = []
    for layer, heads in quality.items():
        flat = [(i, q.entropy) for i, q in enumerate(heads) if q.near_uniform]
        if flat:
            which = ", ".join(f"{i} ({e:.2f})" for i, e in flat)
            parts.append(f"{layer} head{'s' if len(flat) > 1 else ''} {which}")
    if not parts:
        return None
    return (f"Near uniform (entropy ÷ log N in brackets): {'; '.join(parts)}. Such a head spreads its attention "
            "almost evenly: it acts like an average, not a lookup.")


# The layer each panel of the Compare view opens on, by name: late enough to be about
# the object, fine enough to see where (14x14 at 224 px); a model without it opens on
# its last layer of that kind.
COMPARE_LAYER = {"se": "layer4.1.se.gate", "cbam": "layer3.1.cbam.spatial.gate", "self_attn": "layer3.1.attn.softmax"}

# Widths in px the figures are laid out for on a 1400 px wide window with the sidebar
# open (the maps' heights follow; measured on screenshots). A little less than they get,
# so that a map rather fills its figure's height, as its colour bar does.
MAP_WIDTH = {"cbam": 360, "self_attn": 900, "axial": 360, "compare": 200}


def default_layer(kind: str, layers: list[str]) -> int:
    """Index in ``layers`` of the Compare view's layer for ``kind``."""
    return layers.index(COMPARE_LAYER[kind]) if COMPARE_LAYER[kind] in layers else len(layers) - 1


# How the self-attention view picks its query: the hover explorer (in the browser) or
# a click (a rerun on the server; works where the explorer's script cannot run).
QUERY_MODES = ("Hover", "Click")
EXPLORER_FALLBACK = ("No maps above, or an error? The explorer's script could not run in this browser: "
                     "choose Click to query by clicking.")

UPLOAD_TYPES = ["jpg", "jpeg", "png", "webp", "bmp", "gif", "tif", "tiff"]
CLICK_WIDTH = 448


TIMM_HELP = ("A timm (PyTorch Image Models) architecture and its checkpoint: a .safetensors file, or a .pth/.bin "
             "state dict (read as plain tensors; nothing is unpickled as code). Without a checkpoint: random "
             "weights, to try the views. Nothing is downloaded. cbam:resnet50 takes the CBAM authors' "
             "RESNET50_CBAM_new_name_wrap.pth (linked from github.com/Jongchan/attention-module).")


PRETRAINED_HELP = ("Attention models trained on ImageNet-1k (1,000 classes), from timm's releases on the "
                   "Hugging Face hub: downloaded once into this server's cache, then loaded from there.")
DOWNLOADS_OFF = ("Downloads are off on this server (start it with ATTNVIZ_ALLOW_DOWNLOADS=1 to allow them); "
                 "models already in its Hugging Face cache load.")


def pretrained_table(rows) -> str:
    """A markdown table of ``timm_adapter.PRETRAINED`` rows: architecture, tag, size, top-1, source."""
    lines = ["| architecture | tag | params | download | ImageNet top-1 |", "|---|---|---|---|---|"]
    for p in rows:
        arch, tag = p.name.split(".", 1)
        mb = p.params_m * 4  # float32
        lines.append(f"| {arch} | {tag} | {p.params_m:.1f} M | ~{mb:.0f} MB | {p.top1:.1f} % at {p.size}px |")
    sources = sorted({p.source for p in rows})
    return "\n".join(lines) + f"\n\nTop-1: {', '.join(sources)}."


# What a view says, under "no model with ... is loaded", about where such a model comes from.
HOW_TO_LOAD = {
    "axial": "Axial attention is attnviz's `axial_resnet18`, whose weights ship with attnviz "
             "(`weights/axial_resnet18.safetensors`); this installation has none. Load a pair under *Your own "
             "weights* in the sidebar; `attnviz train imagenette2-224/train --val-dir imagenette2-224/val "
             "--arch axial_resnet18 --out mine/` writes one.",
    "context": "Context maps come from timm's GCNet and LambdaNet. In the sidebar: *Pretrained on ImageNet* → "
               "`gcresnet50t.ra2_in1k`, or *Your own model* → `gcresnet33ts` or `lambda_resnet26t` with a "
               "checkpoint (or random weights, to see the view).",
    "self_attn": "Self-attention is attnviz's `sa_resnet18`, or timm's BoTNet and HaloNet: *Pretrained on ImageNet* "
                 "→ `botnet26t_256.c1_in1k` in the sidebar.",
    "se": "SE gates: attnviz's `se_resnet18`, or *Pretrained on ImageNet* → `seresnet50.ra2_in1k` in the sidebar.",
    "cbam": "CBAM: attnviz's `cbam_resnet18`, or the authors' ImageNet model: *Your own model* → "
            "`cbam:resnet50` with their checkpoint `RESNET50_CBAM_new_name_wrap.pth`.",
}


def missing_kind_line(kinds: tuple[str, ...]) -> str:
    """What a view says where no loaded model has any of ``kinds``."""
    labels = dict.fromkeys(KINDS[k].label.split(" (")[0] for k in kinds)  # an axial layer's two steps: one
    return f"No model with {' or '.join(labels)} is loaded."


def to_image_xy(click: dict, image_size: tuple[int, int]) -> tuple[int, int]:
    """A click in displayed pixels (``x``, ``y``, ``width``, ``height`` as
    ``attnviz.app.click_image`` returns it) -> the (x, y) of the original image's pixel
    under the centre of the clicked displayed pixel."""
    width, height = image_size
    x = int((click["x"] + 0.5) * width / click["width"])
    y = int((click["y"] + 0.5) * height / click["height"])
    return min(max(x, 0), width - 1), min(max(y, 0), height - 1)


def marked_image(im: Image.Image, xy: tuple[int, int], max_side: int = CLICK_WIDTH,
                 extent: tuple[int, int] | None = None) -> Image.Image:
    """A display copy of ``im`` with a cross-hair on the centre of pixel ``xy`` of the
    original image, whose (width, height) is ``extent`` (default: ``im``'s own size)."""
    width, height = extent or im.size
    shown = display_image(im, max_side).copy()
    sx, sy = (xy[0] + 0.5) * shown.width / width, (xy[1] + 0.5) * shown.height / height
    draw = ImageDraw.Draw(shown)
    r = max(6, shown.width // 40)
    for colour, w in (("black", 5), ("white", 2)):
        draw.line([(sx - r, sy), (sx + r, sy)], fill=colour, width=w)
        draw.line([(sx, sy - r), (sx, sy + r)], fill=colour, width=w)
    return shown


def centre(image_size: tuple[int, int]) -> tuple[int, int]:
    """The pixel at the middle of an image of (width, height): the first query."""
    return image_size[0] // 2, image_size[1] // 2


# --- interventions and the channel drill-down ----------------------------------------

INTERVENTION_LABELS = {
    "gates-off": "channel gates set to 1 (attention off)",
    "gates-mean": "channel gates set to the class-agnostic mean gate of the SE profile",
    "knockout-top": "the k largest channel gates set to 0",
    "spatial-mean": "spatial map replaced by its mean (no “where”)",
    "spatial-invert": "spatial map inverted (1 − map)",
    "attn-uniform": "attention replaced by the uniform 1/N (an average)",
    "attn-self": "attention replaced by the identity (no mixing)",
}

WHOLE_MODEL = "whole model"


def interventions_for(view: str, has_profile: bool) -> list[str]:
    """The interventions the ``view`` ('se', 'cbam', 'self_attn') offers for a model with
    or without an SE profile of its own: those of the kinds it draws (``kinds.KINDS``);
    'gates-mean' needs the profile's mean gates."""
    offered = {w for k in kinds_of_view(view) for w in KINDS[k].interventions}
    ordered = [*BASELINES, *(w for w in INTERVENTIONS if w not in BASELINES)]
    return [w for w in ordered if w in offered and (w != "gates-mean" or has_profile)]


# The faithful baselines, offered first: each keeps the module's average effect and removes
# only what depends on the image (which channels, where, which positions).
BASELINES = ("gates-mean", "spatial-mean", "attn-uniform")
OFF_CAVEAT = ("A network is trained with its gates in place: “off” (every gate 1) feeds the next layers inputs "
              "they never saw, so a collapse says little about what the gates select. The baselines first in "
              "the list (the mean gate, the mean spatial map, uniform attention) keep the module's average effect "
              "and remove only what depends on the image.")


def effect_line(result) -> str:
    """How far one intervention moves the prediction, in one row of the panel's table."""
    name, p0, p1 = result.delta
    top0, top1 = result.top_k(1)[0][0], result.top_k(1, after=True)[0][0]
    label = INTERVENTION_LABELS[result.what].replace("the k ", f"the {result.k} ") if result.k else \
        INTERVENTION_LABELS[result.what]
    return f"| {label} | {name} {p0:.1%} → {p1:.1%} | {(p1 - p0) * 100:+.1f} | {top1 if top1 != top0 else 'same'} |"


def intervention_summary(result) -> str:
    """One line for an ``InterventionResult``: what was changed where, and how the
    followed class's probability and the top-1 moved."""
    name, p0, p1 = result.delta
    blocks = list(dict.fromkeys(".".join(p.split(".")[:2]) for p in result.layers))
    scope = ", ".join(blocks) if len(blocks) <= 2 else f"{len(blocks)} blocks ({blocks[0]} … {blocks[-1]})"
    what = INTERVENTION_LABELS[result.what]
    if result.k is not None:
        what = what.replace("the k ", f"the {result.k} ")
    top0, top1 = result.top_k(1)[0][0], result.top_k(1, after=True)[0][0]
    moved = f"top-1 stays {top0}" if top0 == top1 else f"top-1 {top0} → {top1}"
    return f"{what} in {scope}: {name} {p0:.1%} → {p1:.1%} ({(p1 - p0) * 100:+.1f} points); {moved}."


def picked_channel(points: list[dict], block: str | None = None) -> tuple[str, int] | None:
    """The (gate path, channel) a click on a chart chose, from Streamlit's selection
    ``points``: a bar of ``block``'s ``gate_bars`` (customdata: the channel) or a cell
    of a clickable ``gates_heatmap`` (customdata: [path, channel, gate]); None when
    nothing is selected."""
    if not points:
        return None
    data = points[0].get("customdata")
    if isinstance(data, list) and len(data) >= 2 and isinstance(data[0], str):
        return data[0], int(data[1])
    if isinstance(data, list):
        data = data[0] if data else None
    return (block, int(data)) if block is not None and data is not None else None


def channel_line(block: str, channel: int, gate: float, rank: int, channels: int) -> str:
    """What the drill-down says about one channel."""
    return (f"**{block} channel {channel}**: gate {gate:.3f} (0..1), rank {rank} of {channels} "
            "in its block (1 = the largest gate).")
