"""``semhitok tokenize``: an image(-text) corpus -> webdataset shards of token ids, for LLM training.

Input: image folders (captions in ``<stem>.txt`` beside the images, as ``semhitok train`` reads
them) and webdataset ``.tar`` shards in the img2dataset layout (``KEY.jpg`` with ``KEY.txt`` and/or
``KEY.json`` captions; brace patterns such as ``shards-{000..009}.tar``), read by the project's
own readers as local files (never through URL schemes such as ``pipe:``).

Output, in ``TOKENS_DIR`` (the format is :mod:`semhitok.data.token_shards`'s; docs/tokenize.md)::

    tokens-000000.tar   per image: KEY.ids.npy  int32 (h, w) flat ids k*m + j (= SemHiTok.encode(...).ids)
                                   KEY.txt      the caption, when the source has one
                                   KEY.json     {"source", "member", "original_size": [h, w]}
                        first member __meta__/shard.json: the shard's record (model, unit, counts, bad files)
    tokens-000001.tar   ...
    manifest.json       fingerprint, grid, K, m, vocab size, image size, counts, bad files, sources,
                        shards with their counts, semhitok and torch versions; written last

and ``TOKENS_DIR.bad_files.log`` beside it when images were skipped.

**Work units and resume.** The inputs are split into a fixed, ordered list of work units
(:func:`semhitok.data.work_units.plan_work_units`: ``--shard-size`` images of a folder, or one
input ``.tar``); output shard ``i`` holds unit ``i`` and is written whole (a temporary file
renamed into place). A rerun of the same command keeps every finished shard -- its record must
name the same model and the same unit, else the run is refused with one line -- and writes the
missing ones; a shard a killed run was writing is started over. The manifest is written when
every shard exists; a folder without it is unfinished.

**torchrun.** Under ``torch.distributed`` unit ``i`` goes to rank ``i % world_size``; rank 0
writes the manifest after a barrier. The shards are the same files as a one-process run's.
Every image goes through the one decoder and the one resize (``crop``), is encoded in batches
under ``torch.inference_mode()``, and images are decoded in ``--workers`` DataLoader processes.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from . import common
from .bad_data import fresh_log, warn_if_any
from .common import OutputFile, info
from .errors import CLIError, one_line

if TYPE_CHECKING:
    import numpy as np

    from ..data.work_units import UnitBatch, WorkUnit
    from ..distributed import DistContext
    from ..modeling import SemHiTok
    from ..precision import ResolvedPrecision

NAME = "tokenize"
HELP = "image folders / .tar shards -> token shards for LLM training (resumable)"
DESCRIPTION = (
    "Tokenize an image(-text) corpus once: every image becomes an int32 (h, w) grid of flat ids k*m + j "
    "in webdataset shards TOKENS_DIR/tokens-NNNNNN.tar (with its caption and metadata), plus "
    "TOKENS_DIR/manifest.json. Rerunning the same command resumes; torchrun splits the work over processes."
)
EXAMPLE = """\
examples:
  semhitok tokenize data/images 'data/shards-{000..009}.tar' --model runs/s2/model -o tokens/
  torchrun --nproc_per_node 8 -m semhitok tokenize 'data/shards-{000..999}.tar' --model runs/s2/model -o tokens/
  semhitok detokenize tokens/ --model runs/s2/model -o tokens-check/

Output shard i holds work unit i: --shard-size images of a folder, or one input .tar. A rerun of
the same command keeps finished shards and redoes the rest; a different model, DATA or
--shard-size for the same TOKENS_DIR is refused. Undecodable images are skipped and listed in
manifest.json and TOKENS_DIR.bad_files.log. Read the tokens with
semhitok.data.read_token_shards (see docs/tokenize.md)."""


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(NAME, help=HELP, description=DESCRIPTION, epilog=EXAMPLE, formatter_class=common.HelpFormatter)
    p.add_argument("data", nargs="+", metavar="DATA", help="image folders (captions in <stem>.txt beside the images) and webdataset .tar shards (brace patterns such as shards-{000..009}.tar)")
    p.add_argument("-o", "--output", required=True, metavar="TOKENS_DIR", help="folder for the token shards and manifest.json (created if missing; a rerun resumes in it)")
    common.add_model_options(p)
    common.add_batch_size_option(p, default=32)
    common.add_precision_option(p)
    default_workers = default_decode_workers()
    p.add_argument(
        "--workers", type=non_negative_int, default=default_workers, metavar="N",
        help=f"DataLoader processes decoding images (default here {default_workers}: all but 2 cores, at most 8; 0 = in this process)",
    )
    p.add_argument("--shard-size", type=common.positive_int, default=1000, metavar="N", help="images of a folder per output shard (default 1000); each input .tar is one shard")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=run)


def default_decode_workers() -> int:
    """Decoding processes that leave two cores to the encoder. On a 2-core machine that is none:
    measured (benchmarks/throughput.py, mini preset), decoding in this process kept 73% of pure
    encode throughput, one worker 69% and two 67%, because a worker takes CPU the encoder's
    threads were using and its OpenMP threads stall when a core is taken from them."""
    return max(0, min(8, (os.cpu_count() or 1) - 2))


def non_negative_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be 0 or more, got {value}")
    return value


def run(args: argparse.Namespace) -> int:
    from .. import distributed
    from ..data.token_shards import MANIFEST_NAME
    from ..data.work_units import plan_work_units
    from ..precision import resolve_and_warn

    try:
        units, sources = plan_work_units(args.data, args.shard_size)
    except (FileNotFoundError, ValueError) as exc:
        raise CLIError(one_line(exc)) from exc
    out_dir = Path(args.output)
    _check_output(out_dir, args.data, units)
    ctx = _join_torchrun()
    if ctx.rank == 0:
        with OutputFile(out_dir / MANIFEST_NAME):
            pass  # fails now, with one line, when TOKENS_DIR cannot be written; leaves nothing behind
    loaded = common.load_model(args)
    model = loaded.model
    fingerprint = model.fingerprint()
    precision = resolve_and_warn(args.precision, next(model.parameters()).device, "--precision")
    done = _finished_shards(out_dir, units, fingerprint, precision.name)
    # Every rank has checked TOKENS_DIR, and rank 0's probe (which may create and remove the
    # folder) is over, before any rank writes into it.
    distributed.barrier()
    mine = [u for u in units if u.index % ctx.world_size == ctx.rank and u.index not in done]
    _remove_stale_temporaries(out_dir, mine)
    _tokenize_units(model, mine, out_dir, fingerprint, precision, args, show_progress=ctx.rank == 0 and not args.quiet)
    distributed.barrier()  # every rank's shards are in place
    if ctx.rank != 0:
        return 0
    manifest = _write_manifest(out_dir, units, sources, model, loaded, args.shard_size, precision.name)
    log = _write_bad_files_log(out_dir, manifest["bad_files"])
    kept = f"; {len(done)} of {len(units)} shards were already done" if done else ""
    note = " [UNTRAINED model: the tokens are meaningless]" if loaded.untrained else ""
    g = model.grid_size
    info(
        f"tokenized {manifest['images']} image{'s' if manifest['images'] != 1 else ''} into {len(units)} shard{'s' if len(units) != 1 else ''} "
        f"of {g}x{g} tokens (vocabulary {model.vocab_size}, model {fingerprint}){kept} -> {out_dir}{note}"
    )
    if log is not None:
        warn_if_any(log)
    return 0


def _check_output(out_dir: Path, data: list[str], units: list[WorkUnit]) -> None:
    """Refuse an output that is a file, or that would write over an input."""
    from ..data.token_shards import shard_name
    from ..data.work_units import TAR

    if out_dir.exists() and not out_dir.is_dir():
        raise CLIError(f"-o {out_dir} is a file; give a folder for the token shards")
    common.refuse_overwriting_inputs(data, out_dir)
    tars = {os.path.realpath(u.source) for u in units if u.kind == TAR}
    for i in range(len(units)):
        if os.path.realpath(out_dir / shard_name(i)) in tars:
            raise CLIError(f"input {out_dir / shard_name(i)} would be overwritten by output shard {i}; choose another -o folder")


def _join_torchrun() -> DistContext:
    """Join the process group under torchrun (rank 0 of 1 otherwise); see semhitok.distributed."""
    from .. import distributed

    try:
        return distributed.setup()
    except ValueError as exc:  # a bad SEMHITOK_DIST_TIMEOUT
        raise CLIError(one_line(exc)) from exc


def _finished_shards(out_dir: Path, units: list[WorkUnit], fingerprint: str, precision: str) -> dict[int, dict[str, Any]]:
    """The records of the shards already in ``out_dir``, by unit index; refuses shards (or a
    manifest) of another model or precision, and shards of another unit (other DATA or --shard-size)."""
    from ..data.token_shards import MANIFEST_NAME, load_manifest, read_shard_record, shard_index

    if not out_dir.is_dir():
        return {}
    fresh = "tokenize into a new folder (or delete this one to start over)"
    if (out_dir / MANIFEST_NAME).exists():
        try:
            manifest = load_manifest(out_dir)
        except (FileNotFoundError, ValueError) as exc:
            raise CLIError(f"{one_line(exc)}; {fresh}") from exc
        if manifest["fingerprint"] != fingerprint:
            raise CLIError(f"{out_dir} holds tokens of model {manifest['fingerprint']}, but this model is {fingerprint}; {fresh}")
    records: dict[int, dict[str, Any]] = {}
    for name in sorted(os.listdir(out_dir)):
        index = shard_index(name)
        if index is None:
            continue
        path = out_dir / name
        try:
            record = read_shard_record(path)
        except (OSError, ValueError) as exc:
            raise CLIError(f"{one_line(exc)}; {fresh}") from exc
        if record["fingerprint"] != fingerprint:
            raise CLIError(f"{out_dir} holds tokens of model {record['fingerprint']} ({name}), but this model is {fingerprint}; {fresh}")
        # bf16 features can land on other codes than fp32 ones: one folder holds one precision's ids
        if record.get("precision", "fp32") != precision:
            raise CLIError(f"{path} was tokenized in {record.get('precision', 'fp32')}, but this run is {precision}; rerun with that --precision, or {fresh}")
        unit = record.get("unit")
        if index >= len(units) or not isinstance(unit, dict) or unit.get("digest") != units[index].digest:
            raise CLIError(
                f"{path} holds other images than work unit {index} of this command (different DATA or --shard-size?); "
                f"rerun the command that made {out_dir}, or {fresh}"
            )
        records[index] = record
    return records


def _remove_stale_temporaries(out_dir: Path, units: list[WorkUnit]) -> None:
    """Delete the hidden temporary files a killed run left for these shards (semhitok.atomic names
    them ``.NAME.XXXXXXXX.tmp``); each rank only touches its own units' files."""
    import re

    from ..data.token_shards import shard_name

    if not out_dir.is_dir() or not units:
        return
    names = {shard_name(u.index) for u in units}
    stale = re.compile(r"\.(tokens-\d{6,}\.tar)\.[0-9a-f]{8}\.tmp")
    for entry in os.listdir(out_dir):
        match = stale.fullmatch(entry)
        if match and match.group(1) in names:
            try:
                os.unlink(out_dir / entry)
            except FileNotFoundError:
                pass


def _as_is(batch: UnitBatch) -> UnitBatch:
    """DataLoader collate for ready-made batches (a module-level function: workers may pickle it)."""
    return batch


def _tokenize_units(
    model: SemHiTok, units: list[WorkUnit], out_dir: Path, fingerprint: str, precision: ResolvedPrecision, args: argparse.Namespace, show_progress: bool
) -> None:
    """Decode, encode and write the shards of ``units``; shards complete as their last batch arrives."""
    import torch
    from torch.utils.data import DataLoader
    from tqdm import tqdm

    from ..data.work_units import FOLDER, UnitBatches

    if not units:
        return
    by_index = {u.index: u for u in units}
    loader = DataLoader(
        UnitBatches(units, model.image_size, args.batch_size), batch_size=None, num_workers=min(args.workers, len(units)), collate_fn=_as_is
    )
    device = next(model.parameters()).device
    pending: dict[int, _ShardBuffer] = {}
    planned = sum(len(u.members) for u in units) if all(u.kind == FOLDER for u in units) else None
    with tqdm(total=planned, desc="tokenize", unit="img", file=sys.stderr, disable=None if show_progress else True, leave=False) as bar:
        for batch in loader:
            shard = pending.setdefault(batch.unit, _ShardBuffer(by_index[batch.unit]))
            if batch.keys:
                with torch.inference_mode(), precision.autocast(device):
                    ids = model.encode(batch.images.to(device, non_blocking=True)).ids
                shard.add(batch, ids.cpu().numpy())
            shard.bad.extend(batch.bad)
            bar.update(len(batch.keys) + len(batch.bad))
            if batch.last:
                write_shard(out_dir, pending.pop(batch.unit), fingerprint, precision.name)


class _ShardBuffer:
    """One unit's encoded samples until its last batch (token ids are small: ~1 KB an image)."""

    def __init__(self, unit: WorkUnit) -> None:
        self.unit = unit
        self.samples: list[Any] = []
        self.bad: list[tuple[str, str]] = []

    def add(self, batch: UnitBatch, ids: np.ndarray) -> None:
        """``ids``: long (b, h, w), the batch's encoding."""
        from ..data.token_shards import TokenSample

        for i, key in enumerate(batch.keys):
            self.samples.append(TokenSample(key, ids[i], batch.captions[i], batch.metas[i]))

    def record(self, fingerprint: str, precision: str) -> dict[str, Any]:
        from ..data.token_shards import FORMAT_NAME, FORMAT_VERSION

        return {
            "format": FORMAT_NAME,
            "format_version": FORMAT_VERSION,
            "shard": self.unit.index,
            "fingerprint": fingerprint,
            "precision": precision,
            "unit": self.unit.describe(),
            "images": len(self.samples),
            "bad_images": len(self.bad),
            "bad_files": [{"name": name, "reason": reason} for name, reason in self.bad],
        }


def write_shard(out_dir: Path, shard: _ShardBuffer, fingerprint: str, precision: str) -> None:
    """Write one finished shard atomically (temporary file, then rename)."""
    from ..data.token_shards import shard_name, write_token_shard

    with OutputFile(out_dir / shard_name(shard.unit.index)) as out:
        with out.open("wb") as f:
            write_token_shard(f, shard.record(fingerprint, precision), shard.samples)
        out.commit()


def _write_manifest(
    out_dir: Path, units: list[WorkUnit], sources: list[str], model: SemHiTok, loaded: common.LoadedModel, shard_size: int, precision: str
) -> dict[str, Any]:
    """manifest.json from the records of every shard (read back from disk: all ranks wrote some)."""
    import json

    import torch

    from .. import __version__
    from ..data.token_shards import FORMAT_NAME, FORMAT_VERSION, MANIFEST_NAME, read_shard_record, shard_name
    from ..data.work_units import RESIZE

    shards, bad_files = [], []
    for unit in units:
        path = out_dir / shard_name(unit.index)
        try:
            record = read_shard_record(path)
        except (OSError, ValueError) as exc:  # another rank failed to write it
            raise CLIError(f"{one_line(exc)}; rerun the command to finish {out_dir}") from exc
        shards.append({"file": path.name, "images": record["images"], "bad_images": record["bad_images"], "unit": record["unit"]})
        bad_files += [{"shard": unit.index, "source": unit.source, **entry} for entry in record["bad_files"]]
    g = model.grid_size
    manifest = {
        "format": FORMAT_NAME,
        "format_version": FORMAT_VERSION,
        "fingerprint": model.fingerprint(),
        "grid": [g, g],
        "codebook_size": model.codebook_size,
        "subcodebook_size": model.subcodebook_size,
        "vocab_size": model.vocab_size,
        "image_size": model.image_size,
        "resize": RESIZE,
        "shard_size": shard_size,
        "precision": precision,
        "images": sum(s["images"] for s in shards),
        "bad_images": len(bad_files),
        "bad_files": bad_files,
        "sources": sources,
        "shards": shards,
        "model": loaded.source + (" (UNTRAINED, random weights)" if loaded.untrained else ""),
        "semhitok_version": __version__,
        "torch_version": torch.__version__,
    }
    with OutputFile(out_dir / MANIFEST_NAME) as out:
        with out.open("w", encoding="utf-8") as f:
            f.write(json.dumps(manifest, indent=2, ensure_ascii=False) + "\n")
        out.commit()
    return manifest


def _write_bad_files_log(out_dir: Path, bad_files: list[dict[str, Any]]) -> Path | None:
    """``TOKENS_DIR.bad_files.log`` (beside the folder, as eval's), one line per skipped image of
    the whole folder (this run's and earlier runs'); None, and no file, when there is none."""
    log = fresh_log(out_dir)
    if not bad_files:
        return None
    with OutputFile(log) as out:
        with out.open("w", encoding="utf-8") as f:
            for entry in bad_files:
                f.write(f"skipped undecodable file {entry['name']}: {entry['reason']}\n")
        out.commit()
    return log
