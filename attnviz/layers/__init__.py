"""The three attention mechanisms attnviz shows, one module each."""

from .cbam import CBAM, ChannelGate, SpatialGate
from .se import SqueezeExcite
from .self_attention import SelfAttention2d

__all__ = ["CBAM", "ChannelGate", "SelfAttention2d", "SpatialGate", "SqueezeExcite"]
