"""``MLLMConfig``: how a SemHiTok MLLM is built around a causal LM, and which parameters train."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Literal

from ..config_types import ConfigError, check_at_least, check_fields, check_known_keys

AdapterKind = Literal["dual", "single", "table", "semantic"]
TrainMode = Literal["adapter", "lora", "full"]

# The projections of Llama, Qwen2, Mistral and SmolLM2 decoder layers (never the LM head).
DEFAULT_LORA_TARGETS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")


@dataclass
class MLLMConfig:
    """Architecture and training choices of :class:`semhitok.mllm.SemHiTokMLLM`.

    Attributes:
        adapter: the input adapter (paper Tab. 7). ``dual``: the semantic code vector and the pixel
            sub-code vector each go through their own MLP and the outputs are concatenated to the
            LLM's hidden size (the paper's Dual-MLP); ``single``: one MLP on ``[z_q ; p_q]``;
            ``table``: a plain learned embedding table of K*m rows; ``semantic``: one MLP on
            ``z_q`` alone (the pixel sub-code is not read: understanding from semantic codes only).
        semantic_width: channels of the semantic MLP's output in ``dual`` (the pixel MLP gets the
            rest of the hidden size); None: half the hidden size.
        train: what trains. ``adapter``: the adapter, the image head and the special-token
            embeddings, the LLM frozen; ``lora``: those plus LoRA matrices in the LLM; ``full``:
            everything but the tokenizer's codebooks.
        lora_rank, lora_alpha, lora_dropout, lora_targets: LoRA settings (``train: lora`` only);
            ``lora_targets`` are module-name suffixes, or ``["all-linear"]``.
        head_bias: initial bias of every image-head row; None: ``-log(K*m)``, so that the K*m new
            rows together add about one unit of probability mass beside the text logits' and
            the text loss at step 0 barely moves (the weight starts at zero).
        loss_chunk: labelled positions per chunk of the cross-entropy: the (chunk, V + K*m + 3)
            logits are formed one chunk at a time and recomputed in backward, never for all
            positions at once.
        use_chat_template: wrap prompts in the text tokenizer's chat template when it has one.
        system_prompt: a system message for chat templates (None: the template's default).
        max_text_tokens: cut captions, questions and answers to this many tokens (None: no cut).
    """

    adapter: AdapterKind = "dual"
    semantic_width: int | None = None
    train: TrainMode = "adapter"
    lora_rank: int = 16
    lora_alpha: float = 32.0
    lora_dropout: float = 0.0
    lora_targets: tuple[str, ...] = DEFAULT_LORA_TARGETS
    head_bias: float | None = None
    loss_chunk: int = 1024
    use_chat_template: bool = True
    system_prompt: str | None = None
    max_text_tokens: int | None = None

    def __post_init__(self) -> None:
        check_fields(self)
        check_at_least(self, 1, ("lora_rank", "loss_chunk"))
        if self.semantic_width is not None and self.semantic_width < 1:
            raise ConfigError("semantic_width", f"must be >= 1 or null, got {self.semantic_width}")
        if self.max_text_tokens is not None and self.max_text_tokens < 1:
            raise ConfigError("max_text_tokens", f"must be >= 1 or null, got {self.max_text_tokens}")
        if self.lora_alpha <= 0:
            raise ConfigError("lora_alpha", f"must be > 0, got {self.lora_alpha}")
        if not 0.0 <= self.lora_dropout < 1.0:
            raise ConfigError("lora_dropout", f"must lie in [0, 1), got {self.lora_dropout}")
        if not self.lora_targets or any(not t for t in self.lora_targets):
            raise ConfigError("lora_targets", f"must name at least one module (no empty names), got {list(self.lora_targets)}")
        if "all-linear" in self.lora_targets and len(self.lora_targets) > 1:
            raise ConfigError("lora_targets", "all-linear stands alone; give it or a list of module names")

    def to_dict(self) -> dict[str, Any]:
        out = dataclasses.asdict(self)
        out["lora_targets"] = list(self.lora_targets)
        return out

    @classmethod
    def from_dict(cls, raw: Any) -> MLLMConfig:
        """Build from a mapping (e.g. ``mllm_config.json``'s ``config``); unknown keys are refused."""
        if not isinstance(raw, dict):
            raise ConfigError("", f"an MLLM config must be a mapping, got {type(raw).__name__}")
        check_known_keys("", raw, cls)
        return cls(**raw)
