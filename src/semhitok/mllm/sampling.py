"""Image generation by a hand-written sampling loop with batched classifier-free guidance.

The conditional and the unconditional prompts (paper §3.3: the caption replaced by ``<uncond>``)
run as one batch of 2B rows, left-padded with explicit position ids so every row's tokens sit at
the positions they had in training. The prompts are prefilled once; then each of the exactly h*w
steps feeds one token per row through the KV cache. At each step::

    l = l_u + s * (l_c - l_u)            # guidance on the raw image logits, before any filtering
    l = l / temperature                  # temperature 0: greedy (argmax of l)
    top-k, then top-p (nucleus) filtering
    draw from softmax(l) with a torch.Generator (the same seed gives the same ids)

Only the K*m image rows of the head are computed and drawn from: a text id or a special can never
appear inside an image, and ``<eoi>`` is appended by code after the h*w-th token. The same sampled
id is fed to a conditional row and to its unconditional twin. :func:`sample_image_ids` with
``use_cache=False`` recomputes the whole sequence at every step instead (the reference the cached
loop is tested and benchmarked against).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal, Protocol

import torch
from torch import Tensor

from ..config_types import ConfigError, check_fields
from .ids import ImageIdSpace


@dataclass
class SamplingConfig:
    """How image ids are drawn.

    Attributes:
        cfg_scale: guidance scale s (1: conditional only, 0: unconditional only).
        cfg_schedule: ``constant`` (s at every step) or ``linear`` (from 1 at the first token to
            s at the last, a gentler start that keeps early layout choices diverse).
        temperature: divides the guided logits; 0 picks the most likely id (greedy).
        top_k: keep the k most likely ids (None: all).
        top_p: then keep the smallest set of ids whose probability reaches p (None or 1: all).
    """

    cfg_scale: float = 4.0
    cfg_schedule: Literal["constant", "linear"] = "constant"
    temperature: float = 1.0
    top_k: int | None = None
    top_p: float | None = None

    def __post_init__(self) -> None:
        check_fields(self)
        if self.temperature < 0:
            raise ConfigError("temperature", f"must be >= 0, got {self.temperature}")
        if self.top_k is not None and self.top_k < 1:
            raise ConfigError("top_k", f"must be >= 1 or null, got {self.top_k}")
        if self.top_p is not None and not 0.0 < self.top_p <= 1.0:
            raise ConfigError("top_p", f"must lie in (0, 1] or be null, got {self.top_p}")

    @property
    def guided(self) -> bool:
        """Whether unconditional rows are needed (any step's scale differs from 1)."""
        return self.cfg_scale != 1.0

    def scale_at(self, step: int, num_steps: int) -> float:
        if self.cfg_schedule == "constant" or num_steps == 1:
            return self.cfg_scale
        return 1.0 + (self.cfg_scale - 1.0) * step / (num_steps - 1)


@dataclass
class ImageSample:
    """What :func:`sample_image_ids` returns.

    Attributes:
        ids: (B, h*w) SemHiTok flat ids, row-major.
        sequences: (B, P + h*w + 1) the conditional rows in joint ids: the left-padded prompt
            (ending in ``<boi>``), the image ids and ``<eoi>``; ready to continue a conversation.
        attention_mask: (B, P + h*w + 1), 0 on the left padding.
    """

    ids: Tensor
    sequences: Tensor
    attention_mask: Tensor


class SamplerModel(Protocol):
    """What the sampler needs from :class:`semhitok.mllm.SemHiTokMLLM`."""

    ids: ImageIdSpace

    def embed(self, input_ids: Tensor, check: bool = True) -> Tensor: ...

    def hidden_states(self, inputs_embeds: Tensor, attention_mask: Tensor, position_ids: Tensor, cache: Any = None) -> Tensor: ...

    def image_logits(self, hidden: Tensor) -> Tensor: ...

    def new_cache(self) -> Any: ...


# ---- logits processing -------------------------------------------------------------------
def guide(cond: Tensor, uncond: Tensor | None, scale: float) -> Tensor:
    """``l_u + s * (l_c - l_u)`` in float32 (the conditional logits alone without ``uncond``)."""
    cond = cond.float()
    if uncond is None:
        return cond
    uncond = uncond.float()
    return uncond + scale * (cond - uncond)


def filter_top_k(logits: Tensor, k: int | None) -> Tensor:
    """Set all but the k largest logits of each row to -inf (ties at the k-th value are kept)."""
    if k is None or k >= logits.shape[-1]:
        return logits
    kth = torch.topk(logits, k, dim=-1).values[..., -1:]
    return logits.masked_fill(logits < kth, -math.inf)


def filter_top_p(logits: Tensor, p: float | None) -> Tensor:
    """Keep the smallest set of most likely ids whose probability reaches ``p`` (the first always)."""
    if p is None or p >= 1.0:
        return logits
    sorted_logits, order = torch.sort(logits, dim=-1, descending=True)
    probs = sorted_logits.softmax(dim=-1)
    # mass of the ids strictly before each one: an id is dropped once that already reaches p
    before = probs.cumsum(dim=-1) - probs
    drop_sorted = before >= p
    drop = torch.zeros_like(drop_sorted).scatter(-1, order, drop_sorted)
    return logits.masked_fill(drop, -math.inf)


def draw(logits: Tensor, config: SamplingConfig, generator: torch.Generator | None) -> Tensor:
    """(B, N) guided logits -> (B,) ids: greedy at temperature 0, else filtered sampling.

    Sampling inverts each row's cumulative distribution at one uniform number from ``generator``
    (so equal seeds give equal ids). One number per row, where the exponential race or
    ``torch.multinomial`` draw one per id: with N = K*m = 196,608 image ids that was 5x slower on
    CPU and a sizeable share of each decode step. The sum runs in float64, so ids of tiny
    probability keep their share; an id of probability 0 (filtered) is never drawn.
    """
    if config.temperature == 0.0:
        return logits.argmax(dim=-1)
    logits = filter_top_p(filter_top_k(logits / config.temperature, config.top_k), config.top_p)
    cdf = logits.softmax(dim=-1).cumsum(dim=-1, dtype=torch.float64)
    u = torch.rand((logits.shape[0], 1), generator=generator, dtype=torch.float64, device=logits.device) * cdf[:, -1:]
    # the first id whose cumulative mass exceeds u: u < cdf[-1], and a zero-mass id never does
    return torch.searchsorted(cdf, u, right=True).squeeze(1).clamp_(max=logits.shape[-1] - 1)


def next_ids(image_logits: Tensor, batch: int, step: int, num_steps: int, config: SamplingConfig, generator: torch.Generator | None) -> Tensor:
    """(R, N) image logits of R = B or 2B rows (conditional first) -> (B,) flat tokenizer ids."""
    uncond = image_logits[batch:] if image_logits.shape[0] > batch else None
    guided = guide(image_logits[:batch], uncond, config.scale_at(step, num_steps))
    return draw(guided, config, generator)


# ---- the loop ----------------------------------------------------------------------------
def left_pad(prompts: Sequence[Sequence[int]], pad_id: int, device: torch.device) -> tuple[Tensor, Tensor]:
    """Prompts of joint ids -> (R, P) left-padded ids and attention mask (long)."""
    length = max(len(p) for p in prompts)
    ids = torch.full((len(prompts), length), pad_id, dtype=torch.long, device=device)
    mask = torch.zeros((len(prompts), length), dtype=torch.long, device=device)
    for row, p in enumerate(prompts):
        if len(p):
            ids[row, length - len(p):] = torch.tensor(list(p), dtype=torch.long, device=device)
            mask[row, length - len(p):] = 1
    return ids, mask


def positions(attention_mask: Tensor) -> Tensor:
    """(R, T) mask -> (R, T) position ids counting real tokens only (0 on the left padding)."""
    return (attention_mask.cumsum(dim=-1) - 1).clamp(min=0)


@torch.no_grad()
def sample_image_ids(
    model: SamplerModel,
    prompts: Sequence[Sequence[int]],
    uncond_prompts: Sequence[Sequence[int]] | None,
    num_tokens: int,
    config: SamplingConfig,
    generator: torch.Generator | None = None,
    pad_id: int = 0,
    use_cache: bool = True,
) -> ImageSample:
    """Draw ``num_tokens`` image ids after each prompt (joint ids ending in ``<boi>``).

    Args:
        model: the MLLM (see :class:`SamplerModel`).
        prompts: B conditional prompts.
        uncond_prompts: B unconditional prompts batched with them for guidance, or None (no
            guidance; ``cfg_scale`` is then ignored).
        num_tokens: h*w, the image's length.
        config: guidance, temperature, top-k, top-p.
        generator: the random stream (on the model's device); None: torch's global one.
        pad_id: a text id for the left padding (masked out).
        use_cache: False: recompute the whole sequence at every step (the reference path).
    """
    if num_tokens < 1:
        raise ValueError(f"num_tokens must be >= 1, got {num_tokens}")
    if not prompts or any(len(p) == 0 for p in prompts):
        raise ValueError("give at least one prompt, none of them empty")
    b = len(prompts)
    rows = list(prompts)
    if uncond_prompts is not None:
        if len(uncond_prompts) != b or any(len(p) == 0 for p in uncond_prompts):
            raise ValueError(f"uncond_prompts must hold {b} non-empty prompts, one per prompt, got {len(uncond_prompts)}")
        rows += list(uncond_prompts)
    device = _device(model)
    ids, mask = left_pad(rows, pad_id, device)
    prompt_ids, prompt_mask = ids[:b], mask[:b]
    out = torch.empty((b, num_tokens), dtype=torch.long, device=device)
    r = len(rows)
    cache = model.new_cache() if use_cache else None
    prompt_positions = positions(mask)
    hidden = model.hidden_states(model.embed(ids), mask, prompt_positions, cache)[:, -1]
    pos = prompt_positions[:, -1:]
    for step in range(num_tokens):
        chosen = next_ids(model.image_logits(hidden), b, step, num_tokens, config, generator)
        out[:, step] = chosen
        if step == num_tokens - 1:
            break  # the last id needs no forward: <eoi> follows by rule, not by sampling
        joint = (chosen + model.ids.image_start).repeat(r // b).unsqueeze(1)  # (R, 1), twins share ids
        mask = torch.cat([mask, mask.new_ones(r, 1)], dim=1)
        pos = pos + 1
        if use_cache:
            hidden = model.hidden_states(model.embed(joint, check=False), mask, pos, cache)[:, -1]
        else:
            ids = torch.cat([ids, joint], dim=1)
            hidden = model.hidden_states(model.embed(ids, check=False), mask, positions(mask), None)[:, -1]
    eoi = torch.full((b, 1), model.ids.eoi, dtype=torch.long, device=device)
    sequences = torch.cat([prompt_ids, model.ids.from_tokenizer(out), eoi], dim=1)
    attention = torch.cat([prompt_mask, prompt_mask.new_ones(b, num_tokens + 1)], dim=1)
    return ImageSample(ids=out, sequences=sequences, attention_mask=attention)


def _device(model: Any) -> torch.device:
    try:
        return next(model.parameters()).device
    except (AttributeError, StopIteration):
        return torch.device("cpu")
