"""What ``semhitok generate`` and ``semhitok describe`` share: the MLLM folder options, its loading
(bad folders -> one-line CLIErrors) and the number types of the sampling options."""

from __future__ import annotations

import argparse
import contextlib
import math
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from .errors import CLIError, one_line
from .images import short
from .model_loading import model_folder, resolve_device
from .options import add_precision_option

if TYPE_CHECKING:
    from ..mllm import SemHiTokMLLM
    from ..precision import ResolvedPrecision

DEFAULT_MLLM = "mini-mllm"  # shipped in the package (semhitok.pretrained)
SEED_LIMIT = 2**63  # torch.Generator.manual_seed takes 64-bit seeds; one sign bit kept for JSON readers


@dataclass
class LoadedMLLM:
    """An MLLM and the folder it came from."""

    model: SemHiTokMLLM
    folder: Path


def add_mllm_options(parser: argparse.ArgumentParser) -> None:
    """``--model MLLM_DIR`` (default the shipped mini-mllm), ``--tokenizer DIR``, ``--device`` and ``--precision``."""
    group = parser.add_argument_group("model")
    group.add_argument(
        "--model", default=DEFAULT_MLLM, metavar="MLLM_DIR",
        help=f"a SemHiTok MLLM folder (mllm_config.json, mllm.safetensors, ...: written by SemHiTokMLLM.save_pretrained) "
        f"or a shipped name (default: {DEFAULT_MLLM}, trained on colour Fashion-MNIST captions)",
    )
    group.add_argument(
        "--tokenizer", metavar="DIR", default=None,
        help="a SemHiTok folder to use instead of the MLLM's own copy (e.g. one with an enhanced decoder); it must have the same codebooks",
    )
    group.add_argument("--device", choices=("cpu", "cuda"), default=None, help="where the model runs (default: cuda when available, else cpu)")
    add_precision_option(parser)


def model_precision(args: argparse.Namespace, model: SemHiTokMLLM) -> ResolvedPrecision:
    """``--precision`` on the model's device (a slow choice warns once)."""
    from ..precision import resolve_and_warn

    return resolve_and_warn(args.precision, model.image_head.weight.device, "--precision")


def load_mllm(args: argparse.Namespace) -> LoadedMLLM:
    """``SemHiTokMLLM.from_pretrained`` on ``--model``; every way a folder can be wrong becomes a
    one-line CLIError (exit status 2)."""
    from ..mllm import MLLMFolderError, SemHiTokMLLM
    from ..modeling import ModelFolderError

    device = resolve_device(args.device)
    folder = model_folder(args.model)  # a folder, else a shipped name
    if not folder.exists():
        raise CLIError(f"--model {args.model}: no such MLLM folder")
    if args.tokenizer is not None and not Path(args.tokenizer).is_dir():
        raise CLIError(f"--tokenizer {args.tokenizer}: no such SemHiTok folder")
    try:
        with _no_transformers_bars():
            model = SemHiTokMLLM.from_pretrained(folder, tokenizer=args.tokenizer, device=device)
    except (MLLMFolderError, ModelFolderError) as exc:
        raise CLIError(one_line(exc)) from exc
    except ValueError as exc:  # a tokenizer with other codebooks, a broken config value
        raise CLIError(one_line(exc)) from exc
    except OSError as exc:  # transformers' own readers: a missing or unreadable LLM / text tokenizer file
        raise CLIError(f"cannot load the MLLM in {folder}: {short(exc)}") from exc
    return LoadedMLLM(model.eval(), folder)


@contextlib.contextmanager
def _no_transformers_bars() -> Iterator[None]:
    """Hide transformers' "Loading weights" bar while the MLLM loads: it is drawn even when stderr
    is not a terminal and stays there, above the command's output or its one error line; the
    commands' own bars are transient and shown on terminals only (cli/messages.py)."""
    from transformers.utils import logging as hf_logging

    # A user's HF_HUB_DISABLE_PROGRESS_BARS decides (toggling against it makes huggingface_hub warn).
    was_enabled = hf_logging.is_progress_bar_enabled()
    if os.environ.get("HF_HUB_DISABLE_PROGRESS_BARS") is not None or not was_enabled:
        yield
        return
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        hf_logging.enable_progress_bar()


def _finite(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"expected a finite number, got {text!r}")
    return value


def non_negative_float(text: str) -> float:
    value = _finite(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be >= 0, got {text}")
    return value


def probability(text: str) -> float:
    """A top-p value: in (0, 1]."""
    value = _finite(text)
    if not 0.0 < value <= 1.0:
        raise argparse.ArgumentTypeError(f"must lie in (0, 1], got {text}")
    return value


def seed(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if not 0 <= value < SEED_LIMIT:
        raise argparse.ArgumentTypeError(f"must lie in [0, 2**63), got {text}")
    return value
