"""Saving and loading a SemHiTok MLLM folder (safetensors only, nothing unpickled).

Layout::

    mllm_config.json     format version, MLLMConfig, id space, tokenizer fingerprint, LLM record
    mllm.safetensors     adapter.*, image_head.*; with delta LLM weights also llm.<name> for every
                         changed LLM tensor (the LoRA matrices) and llm_probe (see below)
    tokenizer/           the SemHiTok (config.json + model.safetensors); absent when the MLLM was
                         built on a shipped tokenizer (``mini-semhitok``): its name is recorded
    text_tokenizer/      the LLM's Hugging Face tokenizer files; absent in a delta folder whose text
                         tokenizer is the base LLM's own (its fingerprint is recorded and checked)
    llm/                 full LLM weights only: a plain Hugging Face folder (config.json,
                         model.safetensors), LoRA matrices kept apart in mllm.safetensors

``llm_weights``: ``full`` writes ``llm/``; ``delta`` writes only what training changed plus the base
LLM's location (``smollm2-135m`` or a folder) and a probe of its weights (a few values of every
tensor), so loading against another base fails instead of silently mixing models; ``auto`` is
delta when the LLM was frozen or LoRA-trained and its location is known, full otherwise.

The tokenizer's codebook fingerprint is recorded: loading with a tokenizer whose codebooks differ
fails with one ValueError line (an enhanced decoder on the same codebooks is fine).
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import torch
from safetensors.torch import save_file
from torch import Tensor

from ..atomic import AtomicDir, OutputError, current_umask
from ..modeling.tokenizer import SemHiTok
from .config import MLLMConfig
from .ids import ImageIdSpace
from .lora import is_lora_name, lora_state_dict, plain_state_dict

if TYPE_CHECKING:
    from .model import SemHiTokMLLM

CONFIG_NAME = "mllm_config.json"
WEIGHTS_NAME = "mllm.safetensors"
TOKENIZER_DIR = "tokenizer"
TEXT_TOKENIZER_DIR = "text_tokenizer"
LLM_DIR = "llm"
FORMAT = "semhitok-mllm"
FORMAT_VERSION = 1
PROBE_KEY = "llm_probe"
_PROBE_VALUES = 8  # values per LLM tensor in the probe


class MLLMFolderError(ValueError):
    """An MLLM folder that cannot be loaded; ``str()`` is one line naming the folder."""


# ---- saving ------------------------------------------------------------------------------
def save_mllm(
    model: SemHiTokMLLM, path: Path, llm_weights: Literal["auto", "full", "delta"] = "auto", dtype: torch.dtype | None = None
) -> None:
    """Write ``model`` to ``path`` whole or not at all (see the module doc for the layout).

    ``dtype`` (e.g. ``torch.bfloat16``) stores the floating tensors of mllm.safetensors in that
    dtype, halving a shipped folder; loading casts them back to the model's dtype. The LLM probe
    stays float32 (it is compared against the base LLM's weights).
    """
    if llm_weights not in ("auto", "full", "delta"):
        raise ValueError(f"llm_weights must be auto, full or delta, got {llm_weights!r}")
    mode = model.config.train
    if llm_weights == "auto":
        llm_weights = "delta" if model.llm_source is not None and mode != "full" else "full"
    if llm_weights == "delta" and model.llm_source is None:
        raise ValueError("llm_weights=delta needs the base LLM's location: build the model from a name or folder, or pass llm_source")
    if llm_weights == "delta" and mode == "full":
        raise ValueError("train: full changes every LLM weight; save with llm_weights='full'")
    state = {f"adapter.{k}": v for k, v in model.adapter.state_dict().items()}
    state |= {f"image_head.{k}": v for k, v in model.image_head.state_dict().items()}
    # LoRA matrices travel in mllm.safetensors either way: llm/ stays a plain Hugging Face folder.
    state |= {f"llm.{k}": v for k, v in lora_state_dict(model.llm).items()}
    if llm_weights == "delta":
        state[PROBE_KEY] = llm_probe(plain_state_dict(model.llm))
    state = {k: v.detach().cpu().contiguous() for k, v in state.items()}
    if dtype is not None:
        if not dtype.is_floating_point:
            raise ValueError(f"dtype must be a floating dtype, got {dtype}")
        state = {k: v.to(dtype) if v.is_floating_point() and k != PROBE_KEY else v for k, v in state.items()}
    fingerprint = model.tokenizer.fingerprint()
    text_fingerprint = text_tokenizer_fingerprint(model.text_tokenizer)
    # A delta folder loads the base LLM anyway: its tokenizer comes with it unless ours differs.
    text_from_base = llm_weights == "delta" and text_fingerprint == _base_text_fingerprint(model.llm_source)
    record = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "config": model.config.to_dict(),
        "ids": model.ids.to_dict(),
        "tokenizer_fingerprint": fingerprint,
        "tokenizer": {"base": model.tokenizer_source},
        "text_tokenizer": {"from_base_llm": text_from_base, "fingerprint": text_fingerprint},
        "llm": {
            "weights": llm_weights,
            "base": model.llm_source if llm_weights == "delta" else None,
            "class": type(model.llm).__name__,
            "hidden_size": int(model.image_head.in_features),
        },
    }

    def write(out: AtomicDir) -> None:
        with out.writing(WEIGHTS_NAME) as weights:
            save_file(state, str(weights), metadata={"format": "pt", "semhitok_fingerprint": fingerprint})
        if model.tokenizer_source is None:
            model.tokenizer.save_pretrained(out.path(TOKENIZER_DIR))
        if not text_from_base:
            with out.writing(TEXT_TOKENIZER_DIR) as folder:
                model.text_tokenizer.save_pretrained(str(folder))
                _follow_umask_tree(folder)
        if llm_weights == "full":
            with out.writing(LLM_DIR) as folder:
                # A LoRA-injected model saves its plain weights under their plain names.
                model.llm.save_pretrained(str(folder), state_dict=plain_state_dict(model.llm), safe_serialization=True)
                _follow_umask_tree(folder)
        out.write_text(CONFIG_NAME, json.dumps(record, indent=2) + "\n")

    _write_folder(path, write)


def _write_folder(path: Path, write: Any) -> None:
    """Build the folder beside ``path`` and move it into place; an existing MLLM folder is replaced
    (renamed aside first, removed once the new one is in place), any other non-empty folder refused."""
    if path.exists() and path.is_dir() and any(path.iterdir()):
        if not (path / CONFIG_NAME).is_file():
            raise OutputError(path, f"the folder exists and holds no {CONFIG_NAME}; choose a new or empty folder for the MLLM")
        token = secrets.token_hex(4)
        staging = path.parent / f".{path.name}.{token}.new"
        with AtomicDir(staging) as out:
            write(out)
            out.commit()
        old = path.parent / f".{path.name}.{token}.old"
        try:
            os.rename(path, old)
            os.rename(staging, path)
        except OSError as exc:
            shutil.rmtree(staging, ignore_errors=True)
            raise OutputError(path, exc.strerror or str(exc), exc.errno) from exc
        shutil.rmtree(old, ignore_errors=True)
        return
    with AtomicDir(path) as out:
        write(out)
        out.commit()


def _follow_umask_tree(folder: Path) -> None:
    """Files written by Hugging Face / safetensors get the umask's mode (the Rust writer uses 0600)."""
    mode = 0o666 & ~current_umask()
    for f in folder.rglob("*"):
        if f.is_file():
            os.chmod(f, mode)


def text_tokenizer_fingerprint(text_tokenizer: Any) -> str:
    """A hash of what makes a text tokenizer map text to ids: its vocabulary (added tokens
    included), special tokens and chat template."""
    import hashlib

    content = {
        "vocab": sorted(text_tokenizer.get_vocab().items()),
        "special": {k: str(v) for k, v in sorted(text_tokenizer.special_tokens_map.items())},
        "chat_template": getattr(text_tokenizer, "chat_template", None),
    }
    return hashlib.sha256(json.dumps(content, sort_keys=True).encode()).hexdigest()[:16]


def _base_text_fingerprint(source: str | None) -> str | None:
    """The fingerprint of the text tokenizer stored with the base LLM at ``source`` (None if none)."""
    from ..llm import load_text_tokenizer

    if source is None:
        return None
    try:
        return text_tokenizer_fingerprint(load_text_tokenizer(source))
    except (OSError, ValueError):
        return None


def llm_probe(state: dict[str, Tensor]) -> Tensor:
    """A few evenly spaced values of every tensor (sorted by name), float32: a cheap signature of an
    LLM's weights that survives a change of dtype within its tolerance."""
    parts = []
    for name in sorted(state):
        flat = state[name].detach().reshape(-1)
        if flat.numel() == 0 or not flat.is_floating_point():
            continue
        k = min(_PROBE_VALUES, flat.numel())
        # integer spacing: a float linspace rounds past the end of tensors with tens of millions of values
        idx = torch.arange(k, device=flat.device) * (flat.numel() - 1) // max(k - 1, 1)
        parts.append(flat[idx].float().cpu())
    return torch.cat(parts) if parts else torch.zeros(0)


# ---- loading -----------------------------------------------------------------------------
def read_record(folder: Path) -> dict[str, Any]:
    """The folder's ``mllm_config.json``, checked for shape (one-line MLLMFolderError otherwise)."""
    if not folder.is_dir():
        raise MLLMFolderError(f"MLLM folder {folder} does not exist" if not folder.exists() else f"MLLM folder {folder} is a file, not a folder")
    for name in (CONFIG_NAME, WEIGHTS_NAME):
        if not (folder / name).is_file():
            raise MLLMFolderError(f"MLLM folder {folder} has no {name} (a SemHiTok MLLM folder is written by SemHiTokMLLM.save_pretrained)")
    try:
        record = json.loads((folder / CONFIG_NAME).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise MLLMFolderError(f"cannot read {folder / CONFIG_NAME}: {' '.join(str(exc).split())[:200]}") from exc
    if not isinstance(record, dict) or record.get("format") != FORMAT:
        raise MLLMFolderError(f"{folder / CONFIG_NAME} is not a SemHiTok MLLM config")
    if record.get("format_version") != FORMAT_VERSION:
        raise MLLMFolderError(f"{folder / CONFIG_NAME} has format version {record.get('format_version')!r}; this semhitok reads version {FORMAT_VERSION}")
    for key in ("config", "ids", "tokenizer_fingerprint", "llm"):
        if key not in record:
            raise MLLMFolderError(f"{folder / CONFIG_NAME} lacks {key!r}")
    return record


def check_tokenizer(tokenizer: SemHiTok, expected: str, folder: Path) -> None:
    """Refuse a tokenizer whose codebooks are not the ones the MLLM was trained with."""
    found = tokenizer.fingerprint()
    if found != expected:
        raise ValueError(
            f"the tokenizer's codebooks (fingerprint {found}) are not those the MLLM in {folder} was trained with "
            f"(fingerprint {expected}); use the tokenizer saved with it or one that shares its codebooks"
        )


def load_mllm(
    cls: type[SemHiTokMLLM],
    folder: Path,
    tokenizer: SemHiTok | str | os.PathLike[str] | None,
    base_llm: str | os.PathLike[str] | None,
    dtype: torch.dtype | None,
) -> SemHiTokMLLM:
    """Rebuild the MLLM of ``folder``; see :meth:`SemHiTokMLLM.from_pretrained`."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from ..llm import load_causal_lm
    from ..weights_file import WeightsFileError, read_weights_file

    record = read_record(folder)
    try:
        config = MLLMConfig.from_dict(record["config"])
    except (ValueError, TypeError) as exc:
        raise MLLMFolderError(f"{folder / CONFIG_NAME} has a broken config: {exc}") from exc
    from .model import load_tokenizer

    tokenizer_source = (record.get("tokenizer") or {}).get("base")
    if tokenizer is None:
        if tokenizer_source is not None:
            try:
                tokenizer, _ = load_tokenizer(tokenizer_source)
            except (KeyError, FileNotFoundError) as exc:
                raise MLLMFolderError(f"MLLM folder {folder} uses the shipped tokenizer {tokenizer_source!r}, which this installation lacks: {exc}") from exc
        else:
            if not (folder / TOKENIZER_DIR / "config.json").is_file():
                raise MLLMFolderError(f"MLLM folder {folder} has no {TOKENIZER_DIR}/ and names no shipped tokenizer; pass tokenizer=")
            tokenizer = SemHiTok.from_pretrained(folder / TOKENIZER_DIR)
    elif isinstance(tokenizer, SemHiTok):
        tokenizer_source = None  # saved again, a tokenizer given as a module is copied
    else:
        tokenizer, tokenizer_source = load_tokenizer(tokenizer)
    check_tokenizer(tokenizer, str(record["tokenizer_fingerprint"]), folder)
    text_record = record.get("text_tokenizer") or {}
    text_tokenizer = None
    if not text_record.get("from_base_llm"):
        text_tokenizer = AutoTokenizer.from_pretrained(str(folder / TEXT_TOKENIZER_DIR), local_files_only=True)
    llm_record = record["llm"]
    source: str | None
    if llm_record.get("weights") == "full":
        if not (folder / LLM_DIR / "config.json").is_file():
            raise MLLMFolderError(f"MLLM folder {folder} records full LLM weights but has no {LLM_DIR}/config.json")
        llm = AutoModelForCausalLM.from_pretrained(str(folder / LLM_DIR), dtype=dtype or torch.float32, local_files_only=True).eval()
        source = None
    else:
        source = str(base_llm) if base_llm is not None else llm_record.get("base")
        if not source:
            raise MLLMFolderError(f"MLLM folder {folder} stores only changed LLM weights and names no base LLM; pass base_llm")
        try:
            llm, base_text_tokenizer = load_causal_lm(source, dtype=dtype)
        except FileNotFoundError as exc:
            raise MLLMFolderError(f"the base LLM of {folder} is not available: {exc}; pass base_llm= where it is now") from exc
        if text_tokenizer is None:
            if text_tokenizer_fingerprint(base_text_tokenizer) != text_record.get("fingerprint"):
                raise MLLMFolderError(f"the text tokenizer of the base LLM {source} is not the one the MLLM in {folder} was trained with")
            text_tokenizer = base_text_tokenizer
    if text_tokenizer is None:
        raise MLLMFolderError(f"MLLM folder {folder} has no {TEXT_TOKENIZER_DIR}/ and stores full LLM weights")
    try:
        state = read_weights_file(folder / WEIGHTS_NAME, what="")
    except WeightsFileError as exc:
        raise MLLMFolderError(f"cannot load the weights in MLLM folder {folder}: {exc}") from exc
    probe = state.pop(PROBE_KEY, None)
    if probe is not None:
        found = llm_probe(plain_state_dict(llm))
        if found.shape != probe.shape or not torch.allclose(found, probe, rtol=1e-2, atol=1e-6):
            raise MLLMFolderError(f"the base LLM {source} is not the one the MLLM in {folder} was trained on (its weights differ)")
    model = cls(llm, tokenizer, text_tokenizer, config, llm_source=source, tokenizer_source=tokenizer_source)
    saved_ids = ImageIdSpace(**record["ids"])
    if saved_ids != model.ids:
        raise MLLMFolderError(f"MLLM folder {folder} was saved with id space {saved_ids.to_dict()}, the loaded LLM and tokenizer give {model.ids.to_dict()}")
    _load_state(model, state, folder)
    return model.eval()


def _load_state(model: SemHiTokMLLM, state: dict[str, Tensor], folder: Path) -> None:
    """Load adapter, head and LoRA tensors; every expected tensor must be there, nothing else."""
    own = model.state_dict()
    expected = {k for k in own if k.startswith(("adapter.", "image_head.")) or (k.startswith("llm.") and is_lora_name(k))}
    missing = sorted(expected - set(state))
    unexpected = sorted(set(state) - expected)
    wrong = sorted(k for k in expected & set(state) if state[k].shape != own[k].shape)
    if missing or unexpected or wrong:
        parts = [f"missing {', '.join(missing[:3])}"] if missing else []
        parts += [f"unexpected {', '.join(unexpected[:3])}"] if unexpected else []
        parts += [f"other shape {', '.join(wrong[:3])}"] if wrong else []
        raise MLLMFolderError(f"the weights in {folder / WEIGHTS_NAME} do not fit {CONFIG_NAME}: {'; '.join(parts)}")
    result = model.load_state_dict(state, strict=False)
    assert not result.unexpected_keys  # checked above
