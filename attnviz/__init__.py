"""attnviz: see what SE, CBAM and self-attention do inside image classifiers.

    import attnviz
    model = attnviz.load_model("cbam_resnet18")
    a = attnviz.analyze("photo.jpg", model)
    a.top_k(5); a.cbam_spatial; a.query("layer2.1.attn.softmax", x=120, y=80)
    attnviz.intervene("photo.jpg", model, "spatial-mean").to_json()  # top-5 before -> after
    attnviz.block_features("photo.jpg", model, "layer3.1").before  # (C, H, W) before the gates
"""

from .analysis import Analysis, analyze
from .capture import attention_modules, capture
from .features import BlockFeatures, block_features
from .image import ImageError, load_image
from .intervene import INTERVENTIONS, intervene
from .loading import available_models, load_model
from .models import ARCHITECTURES, build_model
from .weights import WeightsError, WeightsMeta, load_pair, save_pair

__version__ = "0.1.0"

__all__ = [
    "ARCHITECTURES",
    "INTERVENTIONS",
    "Analysis",
    "BlockFeatures",
    "ImageError",
    "WeightsError",
    "WeightsMeta",
    "analyze",
    "attention_modules",
    "available_models",
    "block_features",
    "build_model",
    "capture",
    "intervene",
    "load_image",
    "load_model",
    "load_pair",
    "save_pair",
]
