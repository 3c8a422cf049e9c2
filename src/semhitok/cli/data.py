"""``semhitok data``: build data sets (today: colour Fashion-MNIST on real backgrounds)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from . import common
from .errors import CLIError, one_line

NAME = "data"
HELP = "build a data set (colour-fashion-mnist: the mini-world's images and captions)"
DESCRIPTION = """\
Build colour Fashion-MNIST on real backgrounds: Fashion-MNIST garments tinted with 10 named colours,
composited onto crops of bundled public-domain / CC0 photos, with captions such as "a red ankle boot",
labels (class, colour) and train/val/test splits that follow Fashion-MNIST's. A fixed list of
class x colour pairs is held out of train and val. Written as image folders (PNG + .txt caption) and
as webdataset shards; both are read by 'semhitok train'. Deterministic from --seed."""
EXAMPLE = """\
examples:
  semhitok data colour-fashion-mnist -o data/cfm                 (70,000 images at 64 px)
  semhitok data colour-fashion-mnist -o data/cfm-small --limit 500 --splits train test

The garments come from the Debian package dataset-fashion-mnist (apt-get install
dataset-fashion-mnist), or from --idx DIR holding train-images-idx3-ubyte[.gz] etc."""

DATASETS = ("colour-fashion-mnist",)


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(NAME, help=HELP, description=DESCRIPTION, epilog=EXAMPLE, formatter_class=common.HelpFormatter)
    p.add_argument("dataset", choices=DATASETS, help="which data set to build")
    p.add_argument("-o", "--out", required=True, metavar="DIR", help="output folder (must not exist yet)")
    p.add_argument("--idx", metavar="DIR", help="folder with the Fashion-MNIST IDX files (default: the Debian package's)")
    p.add_argument("--size", type=common.positive_int, default=64, metavar="PX", help="image side in pixels, a multiple of 8 (default 64)")
    p.add_argument("--seed", type=int, default=0, help="seed of every random choice (default 0)")
    p.add_argument("--limit", type=common.positive_int, metavar="N", help="at most N images per split (the first N of the full build)")
    p.add_argument("--splits", nargs="+", choices=("train", "val", "test"), default=["train", "val", "test"], help="splits to build (default: all)")
    p.add_argument("--formats", nargs="+", choices=("folder", "shards"), default=["folder", "shards"], help="image folders, webdataset shards, or both (default)")
    p.add_argument("--shard-size", type=common.positive_int, default=5000, metavar="N", help="images per shard (default 5000)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from ..atomic import AtomicDir
    from ..data.colour_fashion import build_colour_fashion_mnist
    from ..data.fashion_mnist import find_fashion_mnist

    out = Path(args.out)
    if out.exists():
        raise CLIError(f"{out} exists; give a new folder (a build is never mixed into an old one)")
    if args.size < 32 or args.size % 8:
        raise CLIError(f"--size must be a multiple of 8 and at least 32, got {args.size}")
    for file_split in {"test" if s == "test" else "train" for s in args.splits}:
        try:
            find_fashion_mnist(args.idx, file_split)
        except FileNotFoundError as exc:
            hint = "apt-get install dataset-fashion-mnist, or pass --idx DIR"
            raise CLIError(f"{one_line(exc)}; {hint}") from exc
    bars: dict[str, tqdm] = {}

    def progress(split: str, done: int) -> None:
        if split not in bars:
            for bar in bars.values():
                bar.close()
            bars[split] = tqdm(desc=f"{args.dataset} {split}", unit="img", file=sys.stderr, leave=False)
        bars[split].update(1)

    # Built in a temporary folder beside the destination and renamed at the end: an interrupted or
    # failed build leaves nothing that looks like a data set.
    with AtomicDir(out) as dest:
        try:
            manifest = build_colour_fashion_mnist(
                dest.tmp, idx_dir=args.idx, seed=args.seed, size=args.size, splits=args.splits, limit=args.limit,
                shard_size=args.shard_size, formats=args.formats, progress=progress,
            )
        except (ValueError, OSError) as exc:  # e.g. a damaged IDX file, a full disk
            raise CLIError(f"cannot build {out}: {one_line(exc)}") from exc
        finally:
            for bar in bars.values():
                bar.close()
        dest.commit()
    counts = ", ".join(f"{k} {v}" for k, v in manifest["counts"].items())  # type: ignore[union-attr]
    common.info(f"wrote {out} ({counts} images at {args.size} px; formats: {', '.join(args.formats)})")
    return 0
