"""Batches for MLLM training: mixed understanding / generation / text samples, padded, with the
unconditional swap of paper §3.3 (a caption replaced by ``<uncond>`` with probability 0.1) done
here, with exactly the prompt the sampler uses for its unconditional rows."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Literal

import torch
from torch import Tensor

from .loss import IGNORE_INDEX
from .sequences import SequenceFormat, TokenSequence

SampleKind = Literal["understanding", "generation", "text"]
_KINDS = ("understanding", "generation", "text")
_MASK64 = (1 << 64) - 1


@dataclass
class MLLMExample:
    """One raw training sample.

    Attributes:
        kind: ``understanding`` (image + question -> answer), ``generation`` (caption -> image) or
            ``text`` (prompt -> response, or a plain document when ``answer`` is None).
        text: the question, the caption, or the prompt / document.
        image_ids: SemHiTok flat ids of the image, (h, w) or (h*w,), for the two image kinds.
        answer: the answer (understanding, required) or the response (text, optional).
        key: makes the unconditional swap of a generation sample a function of ``(seed, key)``
            alone, the same in every data-loader worker and after a resume (e.g. ``epoch *
            dataset_size + index``); None: drawn from the collator's own seeded generator.
    """

    kind: SampleKind
    text: str
    image_ids: Tensor | None = None
    answer: str | None = None
    key: int | None = None

    def __post_init__(self) -> None:
        if self.kind not in _KINDS:
            raise ValueError(f"kind must be one of {', '.join(_KINDS)}, got {self.kind!r}")
        if not isinstance(self.text, str):
            raise TypeError(f"text must be a string, got {type(self.text).__name__}")
        if (self.image_ids is None) != (self.kind == "text"):
            raise ValueError(f"image_ids must be given for {self.kind} samples" if self.kind != "text" else "image_ids must be None for text samples")
        if self.kind == "understanding" and self.answer is None:
            raise ValueError("answer must be given for understanding samples")


@dataclass
class MLLMBatch:
    """A padded batch (what :meth:`SemHiTokMLLM.forward` takes, via :meth:`model_inputs`).

    Attributes:
        input_ids: (B, T) joint ids (padding: the text tokenizer's pad id, masked out).
        attention_mask: (B, T) long, 1 on real tokens.
        labels: (B, T) long, ``-100`` where there is no loss (prompts, padding).
        uncond: (B,) bool, generation rows whose caption was swapped for ``<uncond>``.
        kinds: each row's sample kind.
    """

    input_ids: Tensor
    attention_mask: Tensor
    labels: Tensor
    uncond: Tensor
    kinds: tuple[str, ...] = field(default_factory=tuple)

    def to(self, device: torch.device | str) -> MLLMBatch:
        return MLLMBatch(self.input_ids.to(device), self.attention_mask.to(device), self.labels.to(device), self.uncond.to(device), self.kinds)

    def model_inputs(self) -> dict[str, Tensor]:
        return {"input_ids": self.input_ids, "attention_mask": self.attention_mask, "labels": self.labels}


class MLLMCollator:
    """Turns :class:`MLLMExample` s into an :class:`MLLMBatch`.

    Args:
        fmt: the sequence format (the model's :attr:`SemHiTokMLLM.format`).
        uncond_prob: probability that a generation sample's caption becomes ``<uncond>``.
        seed: seeds the swap decisions.
        padding_side: ``right`` (usual for training) or ``left`` (as the sampler pads); the model
            derives position ids from the attention mask, so both give the same loss.
        pad_to_multiple_of: round the padded length up (e.g. 8 for tensor cores).
        image_noise: probability that an image id the model reads in a generation sample is
            replaced by a uniformly random image id (its label stays the true id). Teacher forcing
            otherwise lets the model predict each id from its neighbours alone ("continue the
            blob"), never needing the caption; noisy inputs make the caption worth reading. The
            draws are a function of ``(seed, key)`` like the swap, so a resumed run repeats them.
    """

    def __init__(
        self,
        fmt: SequenceFormat,
        uncond_prob: float = 0.1,
        seed: int = 0,
        padding_side: Literal["left", "right"] = "right",
        pad_to_multiple_of: int | None = None,
        image_noise: float = 0.0,
    ) -> None:
        for name, value in (("uncond_prob", uncond_prob), ("image_noise", image_noise)):
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0.0 <= value <= 1.0:
                raise ValueError(f"{name} must lie in [0, 1], got {value!r}")
        if padding_side not in ("left", "right"):
            raise ValueError(f"padding_side must be left or right, got {padding_side!r}")
        if pad_to_multiple_of is not None and pad_to_multiple_of < 1:
            raise ValueError(f"pad_to_multiple_of must be >= 1, got {pad_to_multiple_of}")
        self.fmt = fmt
        self.uncond_prob = float(uncond_prob)
        self.seed = int(seed)
        self.padding_side = padding_side
        self.pad_to_multiple_of = pad_to_multiple_of
        self.image_noise = float(image_noise)
        self.generator = torch.Generator().manual_seed(self.seed)
        self.pad_id = fmt.pad_id

    # ---- the unconditional swap ------------------------------------------------------------
    def swap(self, example: MLLMExample) -> bool:
        """Whether this generation sample trains the unconditional prompt (always draws for a keyless
        generation sample, so the generator's stream does not depend on the other kinds' order)."""
        if example.kind != "generation":
            return False
        if example.key is not None:
            return _unit_hash(self.seed, example.key) < self.uncond_prob
        return bool(torch.rand((), generator=self.generator) < self.uncond_prob)

    def state_dict(self) -> dict[str, Tensor]:
        """The generator's state (for exact resume when examples carry no key)."""
        return {"generator": self.generator.get_state()}

    def load_state_dict(self, state: dict[str, Tensor]) -> None:
        self.generator.set_state(state["generator"])

    # ---- batching --------------------------------------------------------------------------
    def sequence(self, example: MLLMExample, swapped: bool) -> TokenSequence:
        """The example's token sequence (with ``<uncond>`` in place of the caption when ``swapped``)."""
        if example.kind == "understanding":
            assert example.image_ids is not None and example.answer is not None
            return self.fmt.understanding(example.image_ids, example.text, example.answer)
        if example.kind == "generation":
            assert example.image_ids is not None
            return self.fmt.generation(None if swapped else example.text, example.image_ids)
        return self.fmt.text(example.text, example.answer)

    def __call__(self, examples: Sequence[MLLMExample]) -> MLLMBatch:
        if not examples:
            raise ValueError("cannot collate an empty list of examples")
        swaps = [self.swap(e) for e in examples]
        seqs = [self.sequence(e, s) for e, s in zip(examples, swaps)]
        ids, mask, labels = pad_sequences(seqs, self.pad_id, self.padding_side, self.pad_to_multiple_of)
        if self.image_noise > 0:
            for row, example in enumerate(examples):
                if example.kind == "generation":
                    self._add_noise(ids[row], labels[row], example.key)
        return MLLMBatch(ids, mask, labels, torch.tensor(swaps, dtype=torch.bool), tuple(e.kind for e in examples))


    def _add_noise(self, ids: Tensor, labels: Tensor, key: int | None) -> None:
        """Replace some of one row's labelled image-id inputs by random image ids, in place."""
        space = self.fmt.ids
        where = (labels != IGNORE_INDEX) & space.is_image(ids)
        if key is None:
            generator = self.generator
        else:  # its own stream per sample: the same draws whatever the batch around it
            generator = torch.Generator().manual_seed(int(_unit_hash(self.seed ^ 0x5EED, key) * 2**53))
        at = where.nonzero().flatten()  # as many draws as readable ids, whatever the padding
        hit = torch.rand(len(at), generator=generator) < self.image_noise
        random_ids = torch.randint(space.image_start, space.image_start + space.num_image, (len(at),), generator=generator)
        ids[at[hit]] = random_ids[hit]


def pad_sequences(
    seqs: Sequence[TokenSequence], pad_id: int, side: Literal["left", "right"], multiple: int | None = None
) -> tuple[Tensor, Tensor, Tensor]:
    """Pad to one length: ``(input_ids, attention_mask, labels)``, each (B, T) long."""
    length = max(len(s) for s in seqs)
    if multiple:
        length = -(-length // multiple) * multiple
    ids = torch.full((len(seqs), length), pad_id, dtype=torch.long)
    mask = torch.zeros((len(seqs), length), dtype=torch.long)
    labels = torch.full((len(seqs), length), IGNORE_INDEX, dtype=torch.long)
    for row, s in enumerate(seqs):
        span = slice(length - len(s), length) if side == "left" else slice(0, len(s))
        ids[row, span] = torch.tensor(s.input_ids, dtype=torch.long)
        labels[row, span] = torch.tensor(s.labels, dtype=torch.long)
        mask[row, span] = 1
    return ids, mask, labels


def _unit_hash(seed: int, key: int) -> float:
    """A uniform number in [0, 1) from ``(seed, key)``: splitmix64 of the pair (no global state)."""
    x = (seed * 0x9E3779B97F4A7C15 + key) & _MASK64
    for _ in range(2):
        x = (x + 0x9E3779B97F4A7C15) & _MASK64
        x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & _MASK64
        x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & _MASK64
        x ^= x >> 31
    return (x >> 11) / float(1 << 53)

