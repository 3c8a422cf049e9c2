"""Unified MLLM (paper §3.3): SemHiTok image tokens in any Hugging Face causal LM.

``SemHiTokMLLM`` reads images (understanding) and writes them (text-to-image with classifier-free
guidance) through one next-token model over the joint vocabulary of text ids, K*m image ids and
three specials. See ``docs/mllm.md``.
"""

from semhitok.mllm.adapter import ImageAdapter
from semhitok.mllm.collate import MLLMBatch, MLLMCollator, MLLMExample, pad_sequences
from semhitok.mllm.config import MLLMConfig
from semhitok.mllm.head import ImageHead, joint_logits
from semhitok.mllm.ids import SPECIAL_NAMES, ImageIdSpace
from semhitok.mllm.loss import IGNORE_INDEX, MLLMLossOutput
from semhitok.mllm.model import SemHiTokMLLM
from semhitok.mllm.persistence import MLLMFolderError
from semhitok.mllm.sampling import ImageSample, SamplingConfig, sample_image_ids
from semhitok.mllm.sequences import SequenceFormat, TemplateError, TokenSequence

__all__ = [
    "IGNORE_INDEX",
    "SPECIAL_NAMES",
    "ImageAdapter",
    "ImageHead",
    "ImageIdSpace",
    "ImageSample",
    "MLLMBatch",
    "MLLMCollator",
    "MLLMConfig",
    "MLLMExample",
    "MLLMFolderError",
    "MLLMLossOutput",
    "SamplingConfig",
    "SemHiTokMLLM",
    "SequenceFormat",
    "TemplateError",
    "TokenSequence",
    "joint_logits",
    "pad_sequences",
    "sample_image_ids",
]
