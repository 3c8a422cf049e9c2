"""The exact token sequences of a SemHiTok MLLM, shared by training (the collator) and inference.

Paper §3.3 trains one next-token model on interleaved image and text tokens:

- understanding: ``<boi> image <eoi>`` and a question -> the answer (loss on the answer only);
- generation: a caption -> ``<boi> image <eoi>`` (loss on the image ids and ``<eoi>``); for
  classifier-free guidance the caption is sometimes replaced by ``<uncond>``, and sampling uses the
  very same prompt with ``<uncond>`` in place of the caption;
- text only: a prompt -> a response (loss on the response), or a plain document (loss everywhere).

Where the text tokenizer has a chat template, the user's turn and the assistant's turn are rendered
by it (system prompt and turn markers included); the user content (image block, question, caption
or ``<uncond>``) is inserted as tokens between the template's prefix and suffix, so image ids never
pass through the text tokenizer. Without a template the plain format is::

    [bos] <user content> "\\n" <answer> [eos]

where ``<user content>`` is ``<boi> image <eoi> "\\n" question``, the caption, or ``<uncond>``.
The generation sequence ends at ``<eoi>`` in both formats (the sampler appends it by code).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from .ids import ImageIdSpace
from .loss import IGNORE_INDEX

# Stand-ins for the user content and the answer while a chat template is rendered; the rendered
# text is split at them, so they are never tokenized.
_CONTENT = "\x1eSEMHITOK_CONTENT\x1e"
_ANSWER = "\x1eSEMHITOK_ANSWER\x1e"


class TemplateError(ValueError):
    """The text tokenizer's chat template cannot be used (one line)."""


@dataclass(frozen=True)
class TokenSequence:
    """One training or prompt sequence in the joint id space.

    ``labels[i]`` is ``input_ids[i]`` where the model is trained to predict that token (from the
    positions before it), ``-100`` elsewhere; the loss shifts them itself.
    """

    input_ids: list[int]
    labels: list[int]

    def __post_init__(self) -> None:
        if len(self.input_ids) != len(self.labels):
            raise ValueError(f"input_ids ({len(self.input_ids)}) and labels ({len(self.labels)}) differ in length")

    def __len__(self) -> int:
        return len(self.input_ids)


@dataclass(frozen=True)
class _Turn:
    """Token ids around the user content, and around an answer."""

    user_prefix: list[int]   # up to the user content (system prompt, user marker, bos)
    user_suffix: list[int]   # after the user content, up to and including the assistant marker
    answer_prefix: list[int]  # before the answer text (usually empty)
    answer_suffix: list[int]  # after the answer text: end of turn / eos (trained, so answers stop)


class SequenceFormat:
    """Builds :class:`TokenSequence` s for every sample kind, with or without a chat template.

    Args:
        text_tokenizer: the LLM's Hugging Face tokenizer.
        ids: the joint id space.
        use_chat_template: use the tokenizer's chat template when it has one.
        system_prompt: a system message for the chat template (None: the template's default).
        max_text_tokens: cut captions, questions, prompts and answers to this many tokens.
    """

    def __init__(
        self,
        text_tokenizer: Any,
        ids: ImageIdSpace,
        use_chat_template: bool = True,
        system_prompt: str | None = None,
        max_text_tokens: int | None = None,
    ) -> None:
        self.tokenizer = text_tokenizer
        self.ids = ids
        self.max_text_tokens = max_text_tokens
        self.system_prompt = system_prompt
        self.chat = bool(use_chat_template and getattr(text_tokenizer, "chat_template", None))
        self._turn = self._chat_turn() if self.chat else self._plain_turn()
        too_big = [t for t in (*self._turn.user_prefix, *self._turn.user_suffix, *self._turn.answer_suffix) if t >= ids.text_vocab]
        if too_big:
            raise TemplateError(f"the text tokenizer gives id {too_big[0]}, beyond the LLM's {ids.text_vocab} output rows; tokenizer and LLM do not match")

    @property
    def pad_id(self) -> int:
        """A text id to pad with (the tokenizer's pad, else eos, else 0); padding is always masked."""
        for candidate in (self.tokenizer.pad_token_id, self.tokenizer.eos_token_id):
            if candidate is not None and 0 <= candidate < self.ids.text_vocab:
                return int(candidate)
        return 0

    # ---- text pieces -----------------------------------------------------------------------
    def tokens(self, text: str, cut: bool = True) -> list[int]:
        """Text -> token ids without special tokens, cut to ``max_text_tokens`` when ``cut``."""
        if not isinstance(text, str):
            raise TypeError(f"expected a string, got {type(text).__name__}")
        out = list(self.tokenizer(text, add_special_tokens=False)["input_ids"])
        if cut and self.max_text_tokens is not None:
            out = out[: self.max_text_tokens]
        return out

    def _chat_turn(self) -> _Turn:
        base = [{"role": "system", "content": self.system_prompt}] if self.system_prompt is not None else []
        user = [*base, {"role": "user", "content": _CONTENT}]
        prompt = self._render(user, add_generation_prompt=True)
        if prompt.count(_CONTENT) != 1:
            raise TemplateError("the text tokenizer's chat template does not show the user's message once; set use_chat_template: false")
        before, after = prompt.split(_CONTENT)
        full = self._render([*user, {"role": "assistant", "content": _ANSWER}], add_generation_prompt=False)
        if full.startswith(prompt) and full.count(_ANSWER) == 1:
            answer_before, answer_after = full[len(prompt):].split(_ANSWER)
            answer_prefix, answer_suffix = self.tokens(answer_before, cut=False), self.tokens(answer_after, cut=False)
        else:
            # Templates that render the last turn differently once answered: end the answer with
            # eos, which generation stops at as well.
            answer_prefix, answer_suffix = [], self._eos()
        return _Turn(self.tokens(before, cut=False), self.tokens(after, cut=False), answer_prefix, answer_suffix)

    def _plain_turn(self) -> _Turn:
        bos = self.tokenizer.bos_token_id
        return _Turn([bos] if bos is not None else [], self.tokens("\n", cut=False), [], self._eos())

    def _render(self, messages: list[dict[str, str]], add_generation_prompt: bool) -> str:
        from jinja2 import TemplateError as JinjaError

        try:
            text = self.tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=add_generation_prompt)
        except (JinjaError, ValueError, TypeError, KeyError) as exc:  # e.g. a template that wants other roles
            raise TemplateError(f"the text tokenizer's chat template fails ({' '.join(str(exc).split())[:200]}); set use_chat_template: false") from exc
        if not isinstance(text, str):
            raise TemplateError(f"the chat template rendered {type(text).__name__}, not text")
        return text

    def _eos(self) -> list[int]:
        eos = self.tokenizer.eos_token_id
        return [eos] if eos is not None else []

    # ---- blocks ----------------------------------------------------------------------------
    def image_block(self, image_ids: Tensor | Sequence[int]) -> list[int]:
        """Flat tokenizer ids (any shape, row-major) -> ``[<boi>, image ids..., <eoi>]``."""
        flat = torch.as_tensor(image_ids).reshape(-1)
        return [self.ids.boi, *self.ids.from_tokenizer(flat).tolist(), self.ids.eoi]

    def _prompt(self, content: list[int]) -> list[int]:
        return [*self._turn.user_prefix, *content, *self._turn.user_suffix]

    def _answer(self, answer: str) -> list[int]:
        return [*self._turn.answer_prefix, *self.tokens(answer), *self._turn.answer_suffix]

    # ---- sequences -------------------------------------------------------------------------
    def understanding(self, image_ids: Tensor | Sequence[int], question: str, answer: str | None = None) -> TokenSequence:
        """``<boi> image <eoi> \\n question`` as the user's turn, then the answer (labelled).

        Without ``answer``: the prompt that :meth:`SemHiTokMLLM.describe` continues.
        """
        content = [*self.image_block(image_ids), *self.tokens("\n" + question)]
        prompt = self._prompt(content)
        if answer is None:
            return TokenSequence(prompt, [IGNORE_INDEX] * len(prompt))
        reply = self._answer(answer)
        return TokenSequence(prompt + reply, [IGNORE_INDEX] * len(prompt) + reply)

    def generation_prompt(self, caption: str | None) -> list[int]:
        """The prompt that image generation continues, ending in ``<boi>``.

        ``caption=None`` is the unconditional prompt: ``<uncond>`` stands where the caption was,
        inside the same template (training swaps captions for exactly this).
        """
        content = [self.ids.uncond] if caption is None else self.tokens(caption)
        return [*self._prompt(content), self.ids.boi]

    def generation(self, caption: str | None, image_ids: Tensor | Sequence[int]) -> TokenSequence:
        """Caption (or ``<uncond>``) -> ``<boi> image <eoi>``, labelled on the image ids and ``<eoi>``."""
        prompt = self.generation_prompt(caption)
        image = self.image_block(image_ids)[1:]  # <boi> closes the prompt
        return TokenSequence(prompt + image, [IGNORE_INDEX] * len(prompt) + image)

    def text(self, prompt: str, response: str | None = None) -> TokenSequence:
        """Text only: ``prompt`` -> ``response`` (labelled), or a plain document (labelled throughout)."""
        if response is None:
            bos = self.tokenizer.bos_token_id
            body = [*([bos] if bos is not None else []), *self.tokens(prompt), *self._eos()]
            return TokenSequence(body, list(body))
        head = self._prompt(self.tokens(prompt))
        reply = self._answer(response)
        return TokenSequence(head + reply, [IGNORE_INDEX] * len(head) + reply)
