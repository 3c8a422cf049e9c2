"""``semhitok train``: one training stage from a YAML config (single process or torchrun DDP)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from . import common
from .common import info
from .errors import CLIError, one_line, os_reason

if TYPE_CHECKING:
    from ..training import TrainConfig

NAME = "train"
HELP = "train one stage (semantic | pixel | decoder), the MLLM (stage: mllm), or the mini-world's teacher"
DESCRIPTION = "Train one SemHiTok stage. The config names the stage; key=value arguments override it."
EXAMPLE = """\
examples:
  semhitok train configs/tiny/stage1_semantic.yaml --data assets/photos --out runs/s1
  semhitok train configs/tiny/stage2_pixel.yaml --data assets/photos --init runs/s1/model --out runs/s2
  semhitok train configs/tiny/stage1_semantic.yaml --data assets/photos --out runs/s1 --resume
  semhitok train configs/tiny/stage1_semantic.yaml --data assets/photos --out runs/s1 --resume --allow-config-change optim.lr=3e-4
  torchrun --nproc_per_node 8 -m semhitok train configs/paper/stage1_semantic.yaml --out runs/s1
  semhitok train configs/mini/mllm.yaml --data DATA/images/train --out runs/mllm   (stage: mllm, docs/mllm.md)

The run folder gets config.yaml, run.jsonl (git revision, versions, config changes), metrics.jsonl,
tensorboard/, checkpoints/ and, at the end, model/ (a SemHiTok folder for --init of the next stage;
for stage: mllm, the MLLM folder).
One train at a time per run folder (a lock). Ctrl-C or SIGTERM: the step finishes, a checkpoint is
saved, exit 130 / 143; a second Ctrl-C stops at once. Under torchrun, SEMHITOK_DIST_TIMEOUT
(seconds, default 600) bounds how long ranks wait for each other."""


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(NAME, help=HELP, description=DESCRIPTION, epilog=EXAMPLE, formatter_class=common.HelpFormatter)
    p.add_argument("config", metavar="CONFIG.yaml", help="training config (see configs/)")
    p.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help="config overrides, e.g. optim.lr=3e-4 run.max_steps=100")
    p.add_argument("--data", metavar="PATH", help="image folder, Fashion-MNIST folder or .tar shards (overrides data.path); stage: mllm: an image folder, .tar shards or a token folder (replaces data.images)")
    p.add_argument("--out", metavar="RUN_DIR", help="run folder (default: runs/<config name>)")
    p.add_argument("--init", metavar="MODEL_DIR", help="start from this SemHiTok folder (the previous stage's model/); for stage: teacher, an earlier teacher run or folder")
    p.add_argument("--max-steps", type=common.positive_int, metavar="N", help="stop after N optimizer steps (overrides run.max_steps)")
    p.add_argument("--resume", action="store_true", help="continue from the run folder's last checkpoint (same config)")
    p.add_argument(
        "--allow-config-change", action="store_true",
        help="with --resume: accept a config that differs from the run's config.yaml (recorded in run.jsonl)",
    )
    p.add_argument("--quiet", action="store_true", help="no progress bar: one log line every run.log_every steps")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ..data import BadDataError
    from ..training import TrainingAborted, TrainingError, TrainingInterrupted, train

    if args.allow_config_change and not args.resume:
        raise CLIError("--allow-config-change only applies with --resume")
    if _stage_of(args.config) in ("teacher", "judge"):
        return _train_mini_world_model(args, _stage_of(args.config))
    if _stage_of(args.config) == "mllm":
        return _train_mllm(args)
    config = _load_config(args)
    run_dir = Path(args.out) if args.out else Path("runs") / Path(args.config).stem
    try:
        result = train(config, run_dir, data_path=args.data, resume=args.resume, allow_config_change=args.allow_config_change, quiet=args.quiet)
    except (TrainingInterrupted, TrainingAborted) as exc:
        # Not an error: the user (or the scheduler) stopped the run. One line, the shell's 128 + signal.
        if _is_main_rank():
            print(f"semhitok: {one_line(exc)}", file=sys.stderr, flush=True)
        return exc.exit_code
    except (TrainingError, BadDataError, FileNotFoundError, ValueError) as exc:
        raise CLIError(one_line(exc)) from exc
    except OSError as exc:  # e.g. the run folder's disk is full or read-only
        raise CLIError(_os_message(exc)) from exc
    if _is_main_rank():
        info(f"trained {result.steps} steps ({result.images_per_second:.1f} images/s); model: {result.model_dir}")
    return 0


def _load_config(args: argparse.Namespace) -> TrainConfig:
    from ..training import TrainConfig

    config_path = Path(args.config)
    if not config_path.is_file():
        raise CLIError(f"{args.config}: no such config file")
    overrides = list(args.overrides)
    if args.init:
        overrides.append(f"init={args.init}")
    if args.max_steps:
        overrides.append(f"run.max_steps={args.max_steps}")
    try:
        return TrainConfig.from_yaml(config_path, overrides)
    except ValueError as exc:
        raise CLIError(one_line(exc)) from exc  # from_yaml's messages start with the file's name


def _stage_of(path: str) -> str | None:
    """The config's ``stage:`` (None when unreadable: the full loader then reports why)."""
    from ..yaml_io import load_yaml

    try:
        raw = load_yaml(path)
    except (OSError, ValueError):
        return None
    return raw.get("stage") if isinstance(raw, dict) else None


def _train_mini_world_model(args: argparse.Namespace, stage: str) -> int:
    """``stage: teacher`` (the mini-world's SigLIP-style image tower, semhitok.training.teacher) or
    ``stage: judge`` (the independent class/colour classifier, semhitok.evaluation.judge)."""
    from ..evaluation.judge import JudgeTrainConfig, train_judge
    from ..training.overrides import apply_overrides
    from ..training.teacher import TeacherTrainConfig, train_teacher
    from ..yaml_io import load_yaml

    config_cls, trainer = (TeacherTrainConfig, train_teacher) if stage == "teacher" else (JudgeTrainConfig, train_judge)
    if stage == "judge" and (args.resume or args.init):
        raise CLIError("a judge run starts from scratch: --resume and --init do not apply")
    try:
        raw = apply_overrides(load_yaml(args.config), list(args.overrides))
        if args.max_steps:
            raw["max_steps"] = args.max_steps
        if args.init:
            raw["init"] = str(Path(args.init) / "model") if (Path(args.init) / "model").is_dir() else args.init
        config = config_cls.from_dict(raw)
    except (ValueError, TypeError) as exc:
        raise CLIError(f"{args.config}: {one_line(exc)}") from exc
    run_dir = Path(args.out) if args.out else Path("runs") / Path(args.config).stem
    if (run_dir / "model").exists():
        raise CLIError(f"{run_dir} already holds a trained {stage} (model/); choose another --out")
    extra = {"resume": bool(args.resume)} if stage == "teacher" else {}
    try:
        result = trainer(config, run_dir, data_path=args.data, quiet=args.quiet, **extra)
    except (FileNotFoundError, ValueError) as exc:
        raise CLIError(one_line(exc)) from exc
    val = result["val"]
    what = "zero-shot on val" if stage == "teacher" else "on val"
    info(
        f"trained the {stage} {result['steps']} steps in {result['train_seconds']:.0f} s; {what}: "
        f"class {val['val_class_accuracy']:.1%}, colour {val['val_colour_accuracy']:.1%}; model: {run_dir / 'model'}"
    )
    return 0


def _train_mllm(args: argparse.Namespace) -> int:
    """``stage: mllm``: an LLM with SemHiTok image tokens (semhitok.training.mllm_loop)."""
    from ..data import BadDataError
    from ..training import TrainingAborted, TrainingError, TrainingInterrupted
    from ..training.mllm_config import MLLMTrainConfig
    from ..training.mllm_loop import train_mllm

    if args.init:
        raise CLIError("stage: mllm builds its model from the config's llm and tokenizer: --init does not apply")
    overrides = list(args.overrides) + ([f"run.max_steps={args.max_steps}"] if args.max_steps else [])
    try:
        config = MLLMTrainConfig.from_yaml(args.config, overrides)
    except ValueError as exc:
        raise CLIError(one_line(exc)) from exc  # from_yaml's messages start with the file's name
    run_dir = Path(args.out) if args.out else Path("runs") / Path(args.config).stem
    try:
        result = train_mllm(
            config, run_dir, data_paths=[args.data] if args.data else None, resume=args.resume,
            allow_config_change=args.allow_config_change, quiet=args.quiet,
        )
    except (TrainingInterrupted, TrainingAborted) as exc:
        if _is_main_rank():
            print(f"semhitok: {one_line(exc)}", file=sys.stderr, flush=True)
        return exc.exit_code
    except (TrainingError, BadDataError, FileNotFoundError, ValueError, ImportError) as exc:
        raise CLIError(one_line(exc)) from exc
    except OSError as exc:
        raise CLIError(_os_message(exc)) from exc
    if _is_main_rank():
        info(f"trained {result.steps} steps ({result.tokens_per_second:.0f} tokens/s); MLLM: {result.model_dir}")
    return 0


def _is_main_rank() -> bool:
    from .. import distributed

    return distributed.rank() == 0


def _os_message(exc: OSError) -> str:
    """``PATH: reason`` for a plain OSError; an OutputError's own one-line message names its path."""
    if exc.filename:
        return f"{exc.filename}: {os_reason(exc)}"
    return one_line(exc) or os_reason(exc)
