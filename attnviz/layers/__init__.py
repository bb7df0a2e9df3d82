"""The attention mechanisms attnviz shows, one module each."""

from .axial import AxialAttention2d, AxialStep
from .cbam import CBAM, ChannelGate, SpatialGate
from .se import SqueezeExcite
from .self_attention import SelfAttention2d

__all__ = ["AxialAttention2d", "AxialStep", "CBAM", "ChannelGate", "SelfAttention2d", "SpatialGate", "SqueezeExcite"]
