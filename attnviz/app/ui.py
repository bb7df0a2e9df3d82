"""Pure helpers for the Streamlit front end: what the page says, which model shows
which view, and the mapping between the displayed image and the original."""

from __future__ import annotations

from PIL import Image, ImageDraw

from ..attention_quality import HeadQuality
from ..image import display_image
from ..models import REGISTRY

VIEWS = ("Predictions", "SE", "CBAM", "Self-attention", "Compare", "Export")

EXPLAIN = {
    "se": "SE reweights channels only: one gate in 0..1 per channel, the same at every position.",
    "cbam": "CBAM reweights channels, then positions: a gate per channel and an H×W map of where to look.",
    "self_attn": "Self-attention relates points to points: every position takes a weighted mean of all "
                 "positions, so a clicked pixel has its own map over the whole image.",
    "grad_cam": "Above, where each attention module multiplies or mixes the features; below, Grad-CAM of the "
                "same model's last stage: where the features that drive the predicted class's score lie "
                "(min-max scaled, so relative), which need not be the same place.",
}

QUALITY_HELP = ("On each head: **entropy** ÷ log N, how evenly a query spreads its attention (1 = evenly over "
                "all N cells, like an average; lower = it looks at a few places); **query-dependence**, how much "
                "the map changes from one clicked pixel to another in this image (0 = the same map wherever you "
                "click). Both are this image's means over every query pixel.")


def uniform_warnings(layer: str, quality: list[HeadQuality]) -> list[str]:
    """One plain sentence for each head of ``layer`` that is near uniform."""
    return [f"{layer} head {i} spreads its attention almost evenly (entropy ÷ log N = {q.entropy:.2f}): "
            "it acts like an average, not a lookup." for i, q in enumerate(quality) if q.near_uniform]


# The layer each panel of the Compare view opens on, by name: late enough to be about
# the object, fine enough to see where (14x14 at 224 px); a model without it opens on
# its last layer of that kind.
COMPARE_LAYER = {"se": "layer4.1.se.gate", "cbam": "layer3.1.cbam.spatial.gate", "self_attn": "layer3.1.attn.softmax"}

# Widths in px the figures are laid out for on a 1400 px wide window with the sidebar
# open (the maps' heights follow; measured on screenshots). A little less than they get,
# so that a map rather fills its figure's height, as its colour bar does.
MAP_WIDTH = {"cbam": 360, "self_attn": 560, "compare": 200}


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


# The capture kind that a view needs ('cbam' shows both of CBAM's kinds).
VIEW_KIND = {"se": "se", "cbam": "cbam_channel", "self_attn": "self_attn"}


def has_kind(arch: str, kind: str) -> bool:
    """Whether models of ``arch`` (a registered architecture) have the view ``kind``
    ('se', 'cbam', 'self_attn'); False for an architecture the registry does not know."""
    return arch in REGISTRY and VIEW_KIND[kind] in REGISTRY[arch].kinds


def to_image_xy(click: dict, image_size: tuple[int, int]) -> tuple[int, int]:
    """A click in displayed pixels (``x``, ``y``, ``width``, ``height`` as
    streamlit-image-coordinates returns it) -> the (x, y) of the original image's pixel
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
