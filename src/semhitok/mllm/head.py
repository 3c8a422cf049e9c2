"""The shared output head: ``logits = cat([lm_head(h), image_head(h)])`` over text + image + specials.

Paper §3.3 grows the LLM's output head by the K*m image ids. Rather than resizing the Hugging Face
module (which breaks tied weights and sharded training), the new rows are a separate linear layer
whose logits are concatenated after the LLM's own: one softmax over the joint vocabulary, exactly
the extended head, while the LLM is left untouched.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from .ids import ImageIdSpace


class ImageHead(nn.Linear):
    """Linear ``hidden -> K*m + 3``: the head rows of the image ids and the specials.

    Initialised with a zero weight and a constant bias (default ``-log(K*m)``): at step 0 every new
    row has the same logit, the K*m rows together add about one unit of probability mass beside the
    text logits (``exp(-log N) * N = 1``), and no gradient flows from them into the LLM's hidden
    states, so the text loss starts where the plain LLM's is.
    """

    def __init__(self, hidden_size: int, ids: ImageIdSpace, bias_init: float | None = None) -> None:
        super().__init__(hidden_size, ids.head_size, bias=True)
        self.num_image = ids.num_image
        self.bias_init = -math.log(ids.num_image) if bias_init is None else float(bias_init)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        if not hasattr(self, "bias_init"):  # nn.Linear.__init__ calls this before our fields exist
            return
        with torch.no_grad():
            self.weight.zero_()
            self.bias.fill_(self.bias_init)

    def image_logits(self, hidden: Tensor) -> Tensor:
        """(..., hidden) -> (..., K*m): the image rows only, what the sampler draws from."""
        return F.linear(hidden, self.weight[: self.num_image], self.bias[: self.num_image])


def joint_logit_parts(lm_head: nn.Module, image_head: ImageHead, hidden: Tensor) -> tuple[Tensor, Tensor]:
    """(..., hidden) -> the joint logits in two parts, ``(..., V)`` text and ``(..., K*m + 3)``
    image and specials, the latter in the text logits' dtype. The loss works on the parts: it
    needs no concatenated copy of the (..., V + K*m + 3) logits."""
    text = lm_head(hidden)
    return text, image_head(hidden.to(image_head.weight.dtype)).to(text.dtype)


def joint_logits(lm_head: nn.Module, image_head: ImageHead, hidden: Tensor) -> Tensor:
    """(..., hidden) -> (..., V + K*m + 3): text logits, then image and special logits."""
    return torch.cat(joint_logit_parts(lm_head, image_head, hidden), dim=-1)
