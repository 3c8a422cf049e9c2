"""Pieces the commands share: model options and loading, image batches, atomic outputs, messages.

Heavy modules (torch, the model) are imported inside the functions so that building the parser and
printing ``--help`` stay cheap.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import sys
import tempfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .errors import CLIError, one_line, os_reason

if TYPE_CHECKING:
    import torch

    from ..modeling import SemHiTok

PROG = "semhitok"
RESIZE_CHOICES = ("crop", "stretch", "error")
PRESET_SEED = 0


# ---- messages --------------------------------------------------------------------------------
def warn(message: str) -> None:
    """One ``semhitok: warning: ...`` line on stderr."""
    print(f"{PROG}: warning: {one_line(message)}", file=sys.stderr, flush=True)


def info(message: str) -> None:
    """A plain line on stdout (what a command did)."""
    print(message, flush=True)


class HelpFormatter(argparse.RawDescriptionHelpFormatter):
    """Keeps the examples in epilogs as written and leaves room for long option names."""

    def __init__(self, prog: str) -> None:
        super().__init__(prog, max_help_position=32)

    def add_argument(self, action: argparse.Action) -> None:
        super().add_argument(action)
        if isinstance(action, argparse._SubParsersAction) and action.choices:
            # argparse measures subcommand names without their extra indent; a long one then wraps.
            longest = max(len(name) for name in action.choices) + self._current_indent + 2 * self._indent_increment
            self._action_max_length = max(self._action_max_length, longest)


# ---- option types and shared options -----------------------------------------------------------
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
    exclusive.add_argument("--model", metavar="DIR", help="a SemHiTok folder (config.json + model.safetensors, from save_pretrained)")
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


def add_batch_size_option(parser: argparse.ArgumentParser, default: int = 16) -> None:
    parser.add_argument("--batch-size", type=positive_int, default=default, metavar="N", help=f"images per forward pass (default {default})")


# ---- model -------------------------------------------------------------------------------------
@dataclass
class LoadedModel:
    """A model and where it came from."""

    model: SemHiTok
    source: str  # "model folder X" or "preset 'tiny'"
    untrained: bool

    @property
    def untrained_note(self) -> str:
        return f"the model is UNTRAINED ({self.source}, random weights, seed {PRESET_SEED}): its outputs say nothing about what a trained SemHiTok does"


def resolve_device(name: str | None) -> torch.device:
    import torch

    if name is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise CLIError("--device cuda was asked for, but CUDA is not available here (use --device cpu)")
    return torch.device(name)


def load_model(args: argparse.Namespace) -> LoadedModel:
    """Build the model named by ``--model`` or ``--preset``; every bad input becomes a CLIError."""
    device = resolve_device(getattr(args, "device", None))
    if args.preset is not None:
        return LoadedModel(_preset_model(args.preset, device), f"preset {args.preset!r}", untrained=True)
    return LoadedModel(_folder_model(Path(args.model), device), f"model folder {args.model}", untrained=False)


def _preset_model(name: str, device: torch.device) -> SemHiTok:
    import torch

    from ..config import PRESETS, SemHiTokConfig
    from ..modeling import SemHiTok

    if name not in PRESETS:
        raise CLIError(f"unknown preset {name!r}; choose one of {', '.join(sorted(PRESETS))}")
    config = SemHiTokConfig.from_preset(name)
    warn(f"--preset {name} builds an UNTRAINED model with random weights (seed {PRESET_SEED}); use --model DIR for a trained tokenizer")
    with torch.random.fork_rng(devices=[]):  # fixed weights, without disturbing the caller's RNG
        torch.manual_seed(PRESET_SEED)
        model = SemHiTok(config, load_teacher_weights=False)
    return model.to(device).eval()


def _folder_model(folder: Path, device: torch.device) -> SemHiTok:
    from ..config import SemHiTokConfig
    from ..modeling import SemHiTok
    from ..modeling.tokenizer import CONFIG_NAME, WEIGHTS_NAME

    expected = f"a SemHiTok model folder holds {CONFIG_NAME} and {WEIGHTS_NAME}, as written by SemHiTok.save_pretrained"
    if not folder.exists():
        raise CLIError(f"model folder {folder} does not exist")
    if not folder.is_dir():
        raise CLIError(f"--model {folder} is a file, not a folder ({expected})")
    for name in (CONFIG_NAME, WEIGHTS_NAME):
        if not (folder / name).is_file():
            raise CLIError(f"model folder {folder} has no {name} ({expected})")
    config_file = folder / CONFIG_NAME
    try:
        raw = json.loads(config_file.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError) as exc:
        raise CLIError(f"cannot read {config_file}: {os_reason(exc)}") from exc
    except ValueError as exc:
        raise CLIError(f"model folder {folder} has a broken {CONFIG_NAME}: not valid JSON ({one_line(exc)})") from exc
    if not isinstance(raw, dict):
        raise CLIError(f"model folder {folder} has a broken {CONFIG_NAME}: expected a JSON object, got {type(raw).__name__}")
    raw.pop("semhitok_fingerprint", None)
    try:
        SemHiTokConfig.from_dict(raw)
    except (ValueError, TypeError, KeyError, AttributeError) as exc:
        raise CLIError(f"model folder {folder} has a broken {CONFIG_NAME}: {_short(exc)}") from exc
    weights = folder / WEIGHTS_NAME
    try:
        return SemHiTok.from_pretrained(folder, device=device)
    except RuntimeError as exc:
        text = one_line(exc)
        if "Error(s) in loading state_dict" in text:  # torch: the tensors do not fit config.json
            detail = text.split(":", 1)[1].strip() if ":" in text else text
            raise CLIError(f"cannot load the weights in {weights}: they do not match {CONFIG_NAME} ({_short(detail, 200)})") from exc
        raise CLIError(f"cannot load the weights in {weights}: {_short(exc)}") from exc
    except (OSError, ValueError, TypeError, KeyError) as exc:
        raise CLIError(f"cannot load the weights in {weights}: {_short(exc)}") from exc
    except Exception as exc:
        if type(exc).__name__ == "SafetensorError":  # a damaged or foreign model.safetensors
            raise CLIError(f"cannot load the weights in {weights}: {_short(exc)}") from exc
        raise


def _short(exc: BaseException, limit: int = 240) -> str:
    text = one_line(exc) or type(exc).__name__
    return text if len(text) <= limit else text[: limit - 3] + "..."


# ---- images ------------------------------------------------------------------------------------
def check_image_paths(paths: Sequence[str]) -> None:
    """Fail before any work when an input is missing or is a folder."""
    for p in paths:
        path = Path(p)
        if path.is_dir():
            raise CLIError(f"{p} is a directory, not an image (give the image files, e.g. {p.rstrip('/')}/*.jpg)")
        if not path.exists():
            raise CLIError(f"{p}: no such file")


def load_fitted(path: str, size: int, policy: str) -> torch.Tensor:
    """Read one image and fit it to (1, 3, size, size) with the resize policy."""
    from ..image_io import load_image
    from ..modeling import fit_to_size

    try:
        image = load_image(path)
    except FileNotFoundError as exc:
        raise CLIError(f"{path}: no such file") from exc
    except IsADirectoryError as exc:
        raise CLIError(f"{path} is a directory, not an image") from exc
    except ValueError as exc:
        raise CLIError(_short(exc)) from exc
    except OSError as exc:
        raise CLIError(f"cannot read {path}: {os_reason(exc)}") from exc
    h, w = image.shape[-2:]
    if policy == "error" and (h, w) != (size, size):
        raise CLIError(f"{path} is {w}x{h} pixels but the model takes {size}x{size} (use --resize crop or --resize stretch)")
    return fit_to_size(image.unsqueeze(0), size, policy)  # type: ignore[arg-type]


def image_batches(paths: Sequence[str], size: int, policy: str, batch_size: int, desc: str) -> Iterator[tuple[range, torch.Tensor]]:
    """Yield ``(indices, images (b, 3, size, size))`` over ``paths``, with a progress bar on stderr."""
    import torch

    starts = range(0, len(paths), batch_size)
    with progress(len(starts), desc) as bar:
        for start in starts:
            idx = range(start, min(start + batch_size, len(paths)))
            yield idx, torch.cat([load_fitted(paths[i], size, policy) for i in idx])
            bar.update(1)


def progress(total_batches: int, desc: str) -> Any:
    """A tqdm bar over batches on stderr: shown only for more than one batch and on a terminal."""
    from tqdm import tqdm

    return tqdm(total=total_batches, desc=desc, unit="batch", file=sys.stderr, disable=None if total_batches > 1 else True, leave=False)


_UNSAFE = re.compile(r"[\x00-\x1f/\\:]+")


def output_stems(files: Sequence[str] | None, count: int) -> list[str]:
    """File-name stems for ``count`` outputs: each input's stem, made unique; else image_0000...

    ``a/x.jpg`` and ``b/x.png`` give ``x`` and ``x_2``.
    """
    stems: list[str] = []
    used: set[str] = set()
    for i in range(count):
        stem = ""
        if files is not None:
            stem = _UNSAFE.sub("_", Path(str(files[i])).stem).lstrip(".").strip()
        if not stem:
            stem = f"image_{i:04d}"
        candidate, n = stem, 2
        while candidate.lower() in used:  # also unique on case-insensitive file systems
            candidate, n = f"{stem}_{n}", n + 1
        used.add(candidate.lower())
        stems.append(candidate)
    return stems


# ---- atomic outputs ----------------------------------------------------------------------------
def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _make_parents(folder: Path, dest: Path) -> list[Path]:
    """``mkdir -p folder``; returns the folders it created (deepest last), for removal on failure."""
    missing: list[Path] = []
    probe = folder
    while not probe.exists():
        missing.append(probe)
        if probe.parent == probe:
            break
        probe = probe.parent
    if probe.exists() and not probe.is_dir():
        raise CLIError(f"cannot write {dest}: {probe} is a file, not a folder")
    created: list[Path] = []
    for d in reversed(missing):
        try:
            d.mkdir()
        except FileExistsError:
            continue
        except OSError as exc:
            _remove_dirs(created)
            raise CLIError(f"cannot write {dest}: cannot create folder {d}: {os_reason(exc)}") from exc
        created.append(d)
    return created


def _remove_dirs(created: list[Path]) -> None:
    for d in reversed(created):
        try:
            d.rmdir()
        except OSError:
            pass


class OutputFile:
    """A file written under a temporary name beside its destination and renamed there by ``commit``.

    Use as a context manager: leaving the block without ``commit()`` (an error, Ctrl-C) removes the
    temporary file and any folders created for it, so no partial output is left behind. Creating
    it checks at once that the destination can be written.
    """

    def __init__(self, dest: str | Path) -> None:
        self.dest = Path(dest)
        if self.dest.is_dir():
            raise CLIError(f"output {dest} is a folder; give a file name, e.g. {Path(dest) / 'tokens.npz'}")
        self._created = _make_parents(self.dest.parent, self.dest)
        try:
            fd, tmp = tempfile.mkstemp(prefix=f".{self.dest.name}.", suffix=".tmp", dir=self.dest.parent)
        except OSError as exc:
            _remove_dirs(self._created)
            raise CLIError(f"cannot write {dest}: {os_reason(exc)}") from exc
        os.close(fd)
        self.tmp = Path(tmp)
        self._done = False

    def commit(self) -> None:
        try:
            os.chmod(self.tmp, 0o666 & ~_umask())  # mkstemp makes 0600 files
            os.replace(self.tmp, self.dest)
        except OSError as exc:
            raise CLIError(f"cannot write {self.dest}: {os_reason(exc)}") from exc
        self._done = True

    def discard(self) -> None:
        if not self._done:
            self.tmp.unlink(missing_ok=True)
            _remove_dirs(self._created)
            self._done = True

    def __enter__(self) -> OutputFile:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.discard()


class OutputDir:
    """A folder of outputs built in a temporary folder and moved into place by ``commit``.

    A new destination is created by renaming the temporary folder; into an existing one the files
    are moved one by one (same-named files are replaced, others are left alone). Without
    ``commit()`` everything written is removed.
    """

    def __init__(self, dest: str | Path) -> None:
        self.dest = Path(dest)
        self._created: list[Path] = []
        if self.dest.exists() and not self.dest.is_dir():
            raise CLIError(f"output folder {dest} exists and is a file")
        self._merge = self.dest.is_dir()
        where = self.dest if self._merge else self.dest.parent
        if not self._merge:
            self._created = _make_parents(where, self.dest)
        try:
            self.tmp = Path(tempfile.mkdtemp(prefix=f".{self.dest.name or 'out'}.", suffix=".tmp", dir=where))
        except OSError as exc:
            _remove_dirs(self._created)
            raise CLIError(f"cannot write to {dest}: {os_reason(exc)}") from exc
        self._names: list[str] = []
        self._done = False

    def path(self, name: str) -> Path:
        """Where to write output file ``name`` now (inside the temporary folder)."""
        if self._merge and (self.dest / name).is_dir():
            raise CLIError(f"cannot write {self.dest / name}: a folder of that name exists")
        self._names.append(name)
        return self.tmp / name

    def commit(self) -> None:
        try:
            if self._merge:
                for name in self._names:
                    os.replace(self.tmp / name, self.dest / name)
                self.tmp.rmdir()
            else:
                os.chmod(self.tmp, 0o777 & ~_umask())  # mkdtemp makes 0700 folders
                os.rename(self.tmp, self.dest)
        except OSError as exc:
            raise CLIError(f"cannot write to {self.dest}: {os_reason(exc)}") from exc
        self._done = True

    def discard(self) -> None:
        if not self._done:
            shutil.rmtree(self.tmp, ignore_errors=True)
            _remove_dirs(self._created)
            self._done = True

    def __enter__(self) -> OutputDir:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.discard()
