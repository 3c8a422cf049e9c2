"""Option types and the options several commands share (model, resize policy, batch size)."""

from __future__ import annotations

import argparse

RESIZE_CHOICES = ("crop", "stretch", "error")
PRESET_SEED = 0  # --preset models: fixed random weights, the same every run


def positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def add_model_options(parser: argparse.ArgumentParser) -> None:
    """``--model DIR | --preset NAME`` (one is required) and ``--device``."""
    from ..config import PRESETS

    group = parser.add_argument_group("model (give one)")
    exclusive = group.add_mutually_exclusive_group(required=True)
    exclusive.add_argument("--model", metavar="DIR", help="a SemHiTok folder (config.json + model.safetensors, from save_pretrained), or mini-semhitok (shipped)")
    exclusive.add_argument(
        "--preset", metavar="NAME",
        help=f"build an UNTRAINED model with random weights (seed {PRESET_SEED}) from a preset: {', '.join(sorted(PRESETS))}; for trying the tool only",
    )
    group.add_argument("--device", choices=("cpu", "cuda"), default=None, help="where the model runs (default: cuda when available, else cpu)")


def add_resize_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--resize", choices=RESIZE_CHOICES, default="crop",
        help="how images of another size are fit to the model's size: crop = shorter side, then centre "
        "square (default); stretch = both sides, aspect ratio lost; error = refuse",
    )


def add_precision_option(parser: argparse.ArgumentParser) -> None:
    from ..precision import PRECISIONS

    parser.add_argument(
        "--precision", choices=PRECISIONS, default="fp32",
        help="fp32 = the same ids and numbers on every machine (default); bf16 = bf16 autocast (warns on hardware "
        "without native bf16, where it is slower); auto = bf16 where the hardware has it natively, else fp32. "
        "Codebook searches run in fp32 either way",
    )


def add_batch_size_option(parser: argparse.ArgumentParser, default: int = 16) -> None:
    parser.add_argument("--batch-size", type=positive_int, default=default, metavar="N", help=f"images per forward pass (default {default})")
