"""The fixed labelled images whose caption-following an MLLM run logs as it trains (``eval:``)."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from ..data.colour_fashion import load_split
from ..evaluation.caption_following import evaluate_caption_following
from ..mllm import SemHiTokMLLM
from .errors import TrainingError
from .mllm_config import CaptionEvalConfig


@dataclass
class CaptionProbe:
    """Image ids (tokenized once, at the start), labels and captions of the first ``eval.images``
    images of a colour Fashion-MNIST split."""

    ids: Tensor
    labels: Tensor
    colours: Tensor
    captions: list[str]
    batch_size: int

    @classmethod
    def open(cls, config: CaptionEvalConfig, mm: SemHiTokMLLM, device: torch.device) -> CaptionProbe:
        try:
            split = load_split(config.data, config.split, limit=config.images)
        except FileNotFoundError as exc:
            raise TrainingError(f"eval.data: {exc}") from None
        with torch.no_grad():
            ids = mm.tokenizer.encode(split.float_images().to(device)).ids.cpu()
        return cls(ids, split.labels, split.colours, split.captions, config.batch_size)

    def measure(self, mm: SemHiTokMLLM) -> dict[str, float]:
        """``caption_info`` (nats per image) and its standard error, ``caption_info_first_id``,
        ``gen_cls_colour`` and ``gen_cls_class`` (accuracies in [0, 1])."""
        return evaluate_caption_following(mm, self.ids, self.labels, self.colours, self.captions, self.batch_size).metrics()
