"""``SemHiTokMLLM``: a Hugging Face causal LM that reads and writes SemHiTok image tokens (paper §3.3).

One next-token model over text ids and image ids. The input side embeds text ids with the LLM's
own table and image ids through the Dual-MLP adapter on the tokenizer's frozen codebooks; the
output side is the shared head ``cat([lm_head(h), image_head(h)])``. Nothing inside the Hugging Face
model is resized, so tied embeddings, frozen LLMs, LoRA and sharded training work as they do for
the plain LLM.
"""

from __future__ import annotations

import contextlib
import inspect
import os
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, Literal

import torch
from torch import Tensor, nn

from ..modeling.tokenizer import SemHiTok
from .adapter import ImageAdapter
from .config import MLLMConfig
from .head import ImageHead, joint_logit_parts, joint_logits
from .ids import NUM_SPECIALS, ImageIdSpace
from .lora import add_lora
from .loss import IGNORE_INDEX, MLLMLossOutput, labelled_loss
from .sampling import ImageSample, SamplingConfig, left_pad, positions, sample_image_ids
from .sequences import SequenceFormat

DEFAULT_QUESTION = "Describe the image."


class SemHiTokMLLM(nn.Module):
    """A causal LM extended with SemHiTok image ids.

    Build one with :meth:`from_llm` (a fresh adapter and image head around an LLM) or
    :meth:`from_pretrained` (a folder written by :meth:`save_pretrained`).

    Args:
        llm: a Hugging Face ``...ForCausalLM`` (its decoder stack is its ``base_model``).
        tokenizer: the SemHiTok whose codebooks the adapter reads (kept frozen, in eval mode).
        text_tokenizer: the LLM's Hugging Face tokenizer.
        config: adapter, training mode, head init, templates.
        llm_source: where ``llm`` can be loaded from again (``smollm2-135m`` or a folder); lets
            :meth:`save_pretrained` store only the weights that changed.
        tokenizer_source: the name of the shipped SemHiTok that ``tokenizer`` is (``mini-semhitok``);
            :meth:`save_pretrained` then records the name instead of copying its weights.

    Attributes:
        ids: the joint id space (text rows = the LLM head's rows).
        format: the exact token sequences (:class:`SequenceFormat`).
    """

    def __init__(
        self, llm: nn.Module, tokenizer: SemHiTok, text_tokenizer: Any, config: MLLMConfig | None = None,
        llm_source: str | None = None, tokenizer_source: str | None = None,
    ) -> None:
        super().__init__()
        config = config or MLLMConfig()
        _check_llm(llm)
        self.config = config
        self.llm = llm
        self.tokenizer = tokenizer.eval()
        self.tokenizer.requires_grad_(False)
        self.text_tokenizer = text_tokenizer
        self.llm_source = llm_source
        self.tokenizer_source = tokenizer_source
        lm_head = llm.get_output_embeddings()
        hidden = int(lm_head.weight.shape[1])
        self.ids = ImageIdSpace(int(lm_head.weight.shape[0]), tokenizer.codebook_size, tokenizer.subcodebook_size)
        table = llm.get_input_embeddings().weight
        # std over a strided subset of rows: a 150k x 3584 table need not be copied to float whole
        sample_rows = table.detach()[:: max(1, table.shape[0] // 4096)].float()
        self.adapter = ImageAdapter(
            config.adapter,
            tokenizer.semantic_quantizer.codebook,
            tokenizer.pixel_quantizer.codebook,
            hidden,
            semantic_width=config.semantic_width,
            init_std=float(sample_rows.std()),
        ).to(table.device)
        self.image_head = ImageHead(hidden, self.ids, config.head_bias).to(table.device)
        self.format = SequenceFormat(text_tokenizer, self.ids, config.use_chat_template, config.system_prompt, config.max_text_tokens)
        if config.train == "lora":
            add_lora(llm, config)
        self._cache_kwarg = _cache_kwarg(llm.base_model)
        self.set_trainable()

    # ---- construction ----------------------------------------------------------------------
    @classmethod
    def from_llm(
        cls,
        llm: nn.Module | str | os.PathLike[str],
        tokenizer: SemHiTok | str | os.PathLike[str],
        text_tokenizer: Any = None,
        config: MLLMConfig | None = None,
        llm_source: str | None = None,
        dtype: torch.dtype | None = None,
    ) -> SemHiTokMLLM:
        """A new MLLM around an LLM: a module, a local Hugging Face folder, or ``smollm2-135m``.

        Args:
            llm: the causal LM, or where to load it from (offline, see :mod:`semhitok.llm`).
            tokenizer: a SemHiTok, its folder, or a shipped name (``mini-semhitok``).
            text_tokenizer: the LLM's tokenizer (loaded with the LLM when ``llm`` is a name or folder).
            config: see :class:`MLLMConfig`.
            llm_source: for a module ``llm``, where it can be loaded from again (enables saving only
                the changed weights).
            dtype: dtype to load a named LLM in (default float32).
        """
        from ..llm import load_causal_lm, resolve_llm

        if isinstance(llm, (str, os.PathLike)):
            resolved = resolve_llm(llm)
            model, loaded_text_tokenizer = load_causal_lm(llm, dtype=dtype)
            text_tokenizer = text_tokenizer if text_tokenizer is not None else loaded_text_tokenizer
            llm_source = resolved.name if resolved.gguf_file is not None else str(resolved.folder.resolve())
            llm = model
        elif text_tokenizer is None:
            raise ValueError("text_tokenizer is required when llm is a module (the LLM's Hugging Face tokenizer)")
        tokenizer_source = None
        if not isinstance(tokenizer, SemHiTok):
            tokenizer, tokenizer_source = load_tokenizer(tokenizer)
        return cls(llm, tokenizer, text_tokenizer, config, llm_source=llm_source, tokenizer_source=tokenizer_source)

    # ---- what trains -----------------------------------------------------------------------
    def set_trainable(self) -> None:
        """Set ``requires_grad`` for ``config.train``; the tokenizer never trains.

        ``adapter``: adapter, image head, special embeddings. ``lora``: those and the LoRA matrices.
        ``full``: those and every LLM weight.
        """
        self.tokenizer.requires_grad_(False)
        mode = self.config.train
        for name, p in self.llm.named_parameters():
            p.requires_grad_(mode == "full" or (mode == "lora" and "lora_" in name))
        self.adapter.requires_grad_(True)
        self.image_head.requires_grad_(True)

    def trainable_parameters(self) -> list[tuple[str, nn.Parameter]]:
        """``(name, parameter)`` of everything that trains, for the optimizer."""
        return [(n, p) for n, p in self.named_parameters() if p.requires_grad]

    def train(self, mode: bool = True) -> SemHiTokMLLM:
        # A frozen LLM still follows ``mode``: Hugging Face's gradient checkpointing only acts in
        # training mode. The tokenizer stays in eval mode: its EMA codebooks must never move.
        super().train(mode)
        self.tokenizer.eval()
        return self

    # ---- the model -------------------------------------------------------------------------
    def embed(self, input_ids: Tensor, check: bool = True) -> Tensor:
        """(B, T) joint ids -> (B, T, hidden) ``inputs_embeds`` in the LLM's dtype.

        Text ids go through the LLM's table, image ids through the adapter, specials through
        their learned rows. Every part is computed for every position and chosen by mask, so the
        graph (and the set of parameters used) is the same for every batch, as DDP wants.
        ``check=False`` skips the range checks (each one waits for the device), for ids the
        sampler made itself.
        """
        table = self.llm.get_input_embeddings()
        is_text, is_image, is_special = self.ids.is_text(input_ids), self.ids.is_image(input_ids), self.ids.is_special(input_ids)
        if check:
            self.ids.check(input_ids)
            rows = table.weight.shape[0]
            if bool((is_text & (input_ids >= rows)).any()):
                raise ValueError(f"text id beyond the LLM's {rows}-row input embedding table")
        text = table(torch.where(is_text, input_ids, 0))
        image = self.adapter.image_embeddings((input_ids - self.ids.image_start).clamp(0, self.ids.num_image - 1))
        special = self.adapter.special_embeddings((input_ids - self.ids.image_end).clamp(0, NUM_SPECIALS - 1))
        out = torch.where(is_image.unsqueeze(-1), image.to(text.dtype), text)
        return torch.where(is_special.unsqueeze(-1), special.to(text.dtype), out)

    def hidden_states(self, inputs_embeds: Tensor, attention_mask: Tensor, position_ids: Tensor, cache: Any = None) -> Tensor:
        """The decoder stack's last hidden states (B, T, hidden); ``cache`` is extended in place."""
        kwargs: dict[str, Any] = {"inputs_embeds": inputs_embeds, "attention_mask": attention_mask, "position_ids": position_ids, "use_cache": cache is not None}
        if cache is not None:
            kwargs[self._cache_kwarg] = cache
        return self.llm.base_model(**kwargs).last_hidden_state

    def joint_logits(self, hidden: Tensor) -> Tensor:
        """(..., hidden) -> (..., V + K*m + 3) logits over the joint vocabulary."""
        return joint_logits(self.llm.get_output_embeddings(), self.image_head, hidden)

    def joint_logit_parts(self, hidden: Tensor) -> tuple[Tensor, Tensor]:
        """(..., hidden) -> the joint logits as text ``(..., V)`` and image + specials ``(..., K*m + 3)``."""
        return joint_logit_parts(self.llm.get_output_embeddings(), self.image_head, hidden)

    def image_logits(self, hidden: Tensor) -> Tensor:
        """(..., hidden) -> (..., K*m): the image slice only (what the sampler draws from)."""
        return self.image_head.image_logits(hidden.to(self.image_head.weight.dtype))

    def new_cache(self) -> Any:
        """An empty KV cache for :meth:`hidden_states` (Hugging Face's ``DynamicCache``)."""
        from transformers import DynamicCache

        try:
            return DynamicCache(config=self.llm.config)
        except TypeError:  # transformers 4.x takes no config
            return DynamicCache()

    def forward(self, input_ids: Tensor, attention_mask: Tensor | None = None, labels: Tensor | None = None, position_ids: Tensor | None = None) -> MLLMLossOutput:
        """Next-token loss over the joint vocabulary at the labelled positions.

        Args:
            input_ids: (B, T) joint ids.
            attention_mask: (B, T), 0 on padding (left or right); default all ones.
            labels: (B, T) aligned with ``input_ids`` (shifted here), ``-100`` where no loss.
            position_ids: (B, T); default: counted over the real tokens, so padding on either side
                gives each token the position it has unpadded (as the sampler does).
        """
        if labels is None:
            raise ValueError("forward computes the training loss and needs labels; use hidden_states and joint_logits for anything else")
        if labels.shape != input_ids.shape:
            raise ValueError(f"labels {tuple(labels.shape)} and input_ids {tuple(input_ids.shape)} differ in shape")
        bad = (labels != IGNORE_INDEX) & ((labels < 0) | (labels >= self.ids.total))
        if bool(bad.any()):
            raise ValueError(f"labels must be -100 or lie in [0, {self.ids.total})")
        if attention_mask is None:
            attention_mask = torch.ones_like(input_ids)
        if position_ids is None:
            position_ids = positions(attention_mask)
        hidden = self.hidden_states(self.embed(input_ids), attention_mask, position_ids)
        return labelled_loss(hidden, labels, self.joint_logit_parts, self.ids.text_vocab, self.config.loss_chunk)

    # ---- generation ------------------------------------------------------------------------
    @property
    def image_tokens(self) -> int:
        """h*w, image ids per image."""
        return self.tokenizer.grid_size**2

    @torch.no_grad()
    def generate_image_ids(
        self,
        prompts: str | Sequence[str],
        sampling: SamplingConfig | None = None,
        seed: int | None = None,
        use_cache: bool = True,
    ) -> ImageSample:
        """Sample image ids for each caption (see :mod:`semhitok.mllm.sampling`).

        Unconditional rows (``<uncond>`` in place of the caption) are batched in only when the
        guidance scale differs from 1. ``seed`` seeds a generator on the model's device (None:
        one drawn from torch's global generator).
        """
        captions = [prompts] if isinstance(prompts, str) else list(prompts)
        if not captions or not all(isinstance(c, str) for c in captions):
            raise ValueError("prompts must be a string or a non-empty list of strings")
        sampling = sampling or SamplingConfig()
        cond = [self.format.generation_prompt(c) for c in captions]
        uncond = [self.format.generation_prompt(None)] * len(captions) if sampling.guided else None
        generator = self._generator(seed)
        with _eval_mode(self):
            return sample_image_ids(self, cond, uncond, self.image_tokens, sampling, generator, pad_id=self.pad_id, use_cache=use_cache)

    @torch.no_grad()
    def generate_images(
        self,
        prompts: str | Sequence[str],
        cfg_scale: float = 4.0,
        seed: int | None = None,
        temperature: float = 1.0,
        top_k: int | None = None,
        top_p: float | None = None,
        cfg_schedule: Literal["constant", "linear"] = "constant",
    ) -> Tensor:
        """Captions -> float images (B, 3, H, W) in [0, 1], decoded by the tokenizer."""
        sampling = SamplingConfig(cfg_scale=cfg_scale, cfg_schedule=cfg_schedule, temperature=temperature, top_k=top_k, top_p=top_p)
        sample = self.generate_image_ids(prompts, sampling, seed=seed)
        return self.tokenizer.decode(sample.ids)

    @torch.no_grad()
    def answer_ids(
        self,
        image_ids: Tensor,
        question: str | Sequence[str] = DEFAULT_QUESTION,
        max_new_tokens: int = 64,
        do_sample: bool = False,
        temperature: float = 1.0,
        top_p: float | None = None,
        seed: int | None = None,
    ) -> Tensor:
        """Answer token ids (B, n) for images given as SemHiTok ids (B, h, w) or (B, h*w).

        Runs the LLM's own ``generate(inputs_embeds=...)`` on the understanding prompt, greedy or
        sampled (``seed`` seeds the sampling; torch's global generators are restored after). The
        LLM's head covers text ids only, so no image id can appear in an answer; rows of a padded
        head beyond the text tokenizer (Qwen) are suppressed too. Finished rows are padded with
        the pad id.
        """
        if not isinstance(image_ids, Tensor) or image_ids.dim() < 2:
            raise ValueError("image_ids must be a tensor (B, h, w) or (B, h*w)")
        ids = self.tokenizer.check_ids(image_ids).reshape(image_ids.shape[0], -1)
        questions = [question] * ids.shape[0] if isinstance(question, str) else list(question)
        if len(questions) != ids.shape[0]:
            raise ValueError(f"got {len(questions)} questions for {ids.shape[0]} images")
        prompts = [self.format.understanding(row.cpu(), q).input_ids for row, q in zip(ids, questions)]
        device = self.image_head.weight.device
        input_ids, mask = left_pad(prompts, self.pad_id, device)
        kwargs: dict[str, Any] = {"max_new_tokens": max_new_tokens, "do_sample": do_sample, "pad_token_id": self.pad_id}
        if do_sample:
            kwargs.update(temperature=temperature, top_p=top_p if top_p is not None else 1.0, top_k=None)
        eos = _eos_ids(self.llm, self.text_tokenizer)
        if eos:
            kwargs["eos_token_id"] = eos
        padded_rows = list(range(len(self.text_tokenizer), self.ids.text_vocab))
        if padded_rows:
            kwargs["suppress_tokens"] = padded_rows
        with _eval_mode(self), _seeded(seed, device):
            return self.llm.generate(inputs_embeds=self.embed(input_ids), attention_mask=mask, **kwargs)

    @torch.no_grad()
    def answer(self, image_ids: Tensor, question: str | Sequence[str] = DEFAULT_QUESTION, **kwargs: Any) -> list[str]:
        """Answers as text for images given as SemHiTok ids; see :meth:`answer_ids`."""
        out = self.answer_ids(image_ids, question, **kwargs)
        return [t.strip() for t in self.text_tokenizer.batch_decode(out, skip_special_tokens=True)]

    @torch.no_grad()
    def describe(self, images: Tensor, question: str | Sequence[str] = DEFAULT_QUESTION, **kwargs: Any) -> list[str]:
        """Answer a question about float images (B, 3, H, W) in [0, 1]; see :meth:`answer`."""
        return self.answer(self.tokenizer.encode(images).ids, question, **kwargs)

    @property
    def pad_id(self) -> int:
        """A text id for padding (always masked out); see :attr:`SequenceFormat.pad_id`."""
        return self.format.pad_id

    def _generator(self, seed: int | None) -> torch.Generator:
        device = self.image_head.weight.device
        if seed is None:
            seed = int(torch.randint(0, 2**62, (1,)))
        return torch.Generator(device=device).manual_seed(int(seed))

    # ---- persistence -----------------------------------------------------------------------
    def save_pretrained(
        self, path: str | Path, llm_weights: Literal["auto", "full", "delta"] = "auto", dtype: torch.dtype | None = None
    ) -> None:
        """Write the MLLM folder (see :mod:`semhitok.mllm.persistence` for the layout); ``dtype``
        (e.g. ``torch.bfloat16``) stores the adapter, head and LoRA weights in that dtype."""
        from .persistence import save_mllm

        save_mllm(self, Path(path), llm_weights, dtype)

    @classmethod
    def from_pretrained(
        cls,
        path: str | Path,
        tokenizer: SemHiTok | str | os.PathLike[str] | None = None,
        base_llm: str | os.PathLike[str] | None = None,
        device: str | torch.device = "cpu",
        dtype: torch.dtype | None = None,
    ) -> SemHiTokMLLM:
        """Load a folder written by :meth:`save_pretrained`.

        Args:
            path: the folder.
            tokenizer: a SemHiTok (or folder) to use instead of the folder's own copy, e.g. one with an
                enhanced decoder; its codebooks must be the ones the MLLM was trained with.
            base_llm: where the base LLM is now, for a folder that stores only the changed weights
                (default: the location recorded at save time).
            device, dtype: where and in which dtype to put the LLM (default float32).
        """
        from .persistence import load_mllm

        return load_mllm(cls, Path(path), tokenizer, base_llm, dtype).to(device)


# ---- helpers ------------------------------------------------------------------------------
def load_tokenizer(name_or_folder: str | os.PathLike[str]) -> tuple[SemHiTok, str | None]:
    """A SemHiTok from a folder or a shipped name, and the name (None for a folder). An existing
    folder wins over a shipped name."""
    from ..pretrained import PRETRAINED, pretrained_path

    name = str(name_or_folder)
    if name in PRETRAINED and not Path(name).exists():
        return SemHiTok.from_pretrained(pretrained_path(name)), name
    return SemHiTok.from_pretrained(name_or_folder), None


def _check_llm(llm: nn.Module) -> None:
    """Refuse LLMs this wrapper would get wrong, with one clear line."""
    if not (hasattr(llm, "get_output_embeddings") and hasattr(llm, "get_input_embeddings") and hasattr(llm, "base_model")):
        raise TypeError(f"llm must be a Hugging Face causal LM (...ForCausalLM), got {type(llm).__name__}")
    head = llm.get_output_embeddings()
    if head is None or not hasattr(head, "weight") or llm.base_model is llm:
        raise TypeError(f"{type(llm).__name__} has no output head over a decoder stack; give a ...ForCausalLM model")
    cfg = getattr(llm, "config", None)
    # Logit post-processing inside the HF forward (soft-capping, scaling) would apply to the text
    # logits only and break the joint softmax.
    if getattr(cfg, "final_logit_softcapping", None) is not None or getattr(cfg, "logit_scale", None) not in (None, 1, 1.0):
        raise ValueError(f"{type(llm).__name__} post-processes its logits (soft-capping or scaling), which the shared head does not reproduce")


def _cache_kwarg(body: nn.Module) -> str:
    """The KV-cache argument's name: ``cache`` (transformers >= 5.x) or ``past_key_values``."""
    params = inspect.signature(body.forward).parameters
    return "cache" if "cache" in params else "past_key_values"


def _eos_ids(llm: nn.Module, text_tokenizer: Any) -> list[int]:
    found: list[int] = []
    gen = getattr(llm, "generation_config", None)
    configured = getattr(gen, "eos_token_id", None) if gen is not None else None
    for value in ([configured] if isinstance(configured, int) else list(configured or [])) + [text_tokenizer.eos_token_id]:
        if value is not None and value not in found:
            found.append(int(value))
    return found


@contextlib.contextmanager
def _eval_mode(module: nn.Module) -> Iterator[None]:
    """Eval mode inside the block (no dropout, LoRA dropout included), the old mode after."""
    was_training = module.training
    module.eval()
    try:
        yield
    finally:
        module.train(was_training)


@contextlib.contextmanager
def _seeded(seed: int | None, device: torch.device) -> Iterator[None]:
    """Seed torch's global generators inside the block (HF ``generate`` draws from them) and
    restore them after, so a seeded answer leaves the caller's random stream untouched."""
    if seed is None:
        yield
        return
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        torch.manual_seed(seed)
        yield
