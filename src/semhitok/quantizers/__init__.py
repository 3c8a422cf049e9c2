"""Quantizers: the EMA semantic codebook, the semantic-guided hierarchical pixel codebook, and the
gradient-trained (vanilla / normalized) VQ of the semantic-VQ ablation."""

from .ema_vq import EMAVectorQuantizer
from .hierarchical import HierarchicalQuantizer
from .ids import flatten_ids, unflatten_ids
from .nearest import nearest_code
from .outputs import QuantizerOutput
from .vq import VectorQuantizer

__all__ = [
    "EMAVectorQuantizer",
    "HierarchicalQuantizer",
    "QuantizerOutput",
    "flatten_ids",
    "nearest_code",
    "VectorQuantizer",
    "unflatten_ids",
]
