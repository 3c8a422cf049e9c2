"""LoRA for the MLLM's language model (``train: lora``), through ``peft`` injected in place.

The LoRA matrices are added inside the Hugging Face model's own modules (``peft``'s
``inject_adapter_in_model``), so the MLLM keeps calling the LLM as before and the decoder stack,
the KV cache and ``generate`` work unchanged. Their names contain ``lora_``; the wrapped base
weights move to ``<module>.base_layer.weight``, which :func:`base_name` maps back.
"""

from __future__ import annotations

from torch import Tensor, nn

from .config import MLLMConfig

_BASE_LAYER = ".base_layer"


def add_lora(llm: nn.Module, config: MLLMConfig) -> None:
    """Inject LoRA into ``llm`` in place: only the LoRA matrices of the LLM train afterwards."""
    try:
        from peft import LoraConfig, inject_adapter_in_model
    except ImportError as exc:
        raise ImportError("train: lora needs the peft package: pip install 'peft>=0.10'") from exc
    targets: str | list[str] = "all-linear" if tuple(config.lora_targets) == ("all-linear",) else list(config.lora_targets)
    lora = LoraConfig(r=config.lora_rank, lora_alpha=config.lora_alpha, lora_dropout=config.lora_dropout, target_modules=targets, bias="none")
    try:
        inject_adapter_in_model(lora, llm)
    except ValueError as exc:  # peft: "Target modules {...} not found in the base model"
        raise ValueError(f"lora_targets {targets} match no module of the LLM ({type(llm).__name__}): {' '.join(str(exc).split())[:200]}") from exc


def is_lora_name(name: str) -> bool:
    return "lora_" in name


def base_name(name: str) -> str:
    """A parameter name of a LoRA-injected model -> its name in the plain model."""
    return name.replace(_BASE_LAYER, "")


def plain_state_dict(llm: nn.Module) -> dict[str, Tensor]:
    """The LLM's state dict without LoRA tensors and with the base names (what a plain Hugging
    Face folder of the same architecture holds)."""
    return {base_name(k): v for k, v in llm.state_dict().items() if not is_lora_name(k)}


def lora_state_dict(llm: nn.Module) -> dict[str, Tensor]:
    return {k: v for k, v in llm.state_dict().items() if is_lora_name(k)}
