"""SemHiTok: a unified discrete image tokenizer built on a Semantic-Guided Hierarchical Codebook."""

from .config import SemHiTokConfig, TeacherConfig, ViTConfig
from .modeling import SemHiTok, SemHiTokEncoding
from .quantizers import flatten_ids, unflatten_ids

__version__ = "0.1.0"

__all__ = [
    "SemHiTok",
    "SemHiTokConfig",
    "SemHiTokEncoding",
    "TeacherConfig",
    "ViTConfig",
    "__version__",
    "flatten_ids",
    "unflatten_ids",
]
