"""Quantizers: the EMA semantic codebook and the semantic-guided hierarchical pixel codebook."""

from .ema_vq import EMAVectorQuantizer
from .hierarchical import HierarchicalQuantizer
from .ids import flatten_ids, unflatten_ids
from .nearest import nearest_code
from .outputs import QuantizerOutput

__all__ = [
    "EMAVectorQuantizer",
    "HierarchicalQuantizer",
    "QuantizerOutput",
    "flatten_ids",
    "nearest_code",
    "unflatten_ids",
]
