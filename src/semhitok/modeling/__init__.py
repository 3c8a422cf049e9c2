"""The SemHiTok model: teacher, semantic branch, pixel branch, and the tokenizer around them."""

from .images import check_images, fit_to_size
from .outputs import PixelForwardOutput, SemanticForwardOutput, SemHiTokEncoding
from .teacher import SemanticTeacher, teacher_config_from_folder
from .tokenizer import ModelFolderError, SemHiTok

__all__ = [
    "ModelFolderError",
    "PixelForwardOutput",
    "SemHiTok",
    "SemHiTokEncoding",
    "SemanticForwardOutput",
    "SemanticTeacher",
    "check_images",
    "fit_to_size",
    "teacher_config_from_folder",
]
