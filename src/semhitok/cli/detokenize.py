"""``semhitok detokenize``: token shards from ``semhitok tokenize`` -> PNGs and a contact sheet, to
look at what a token corpus holds."""

from __future__ import annotations

import argparse
import math
from itertools import islice
from typing import TYPE_CHECKING

from . import common
from .common import OutputDir, info
from .errors import CLIError, one_line

if TYPE_CHECKING:
    from torch import Tensor

NAME = "detokenize"
HELP = "token shards from 'semhitok tokenize' -> PNGs and a contact sheet"
DESCRIPTION = (
    "Decode the first images of a token folder written by 'semhitok tokenize' back to pixels: one PNG per "
    "image, named after its key, and contact_sheet.png with the first 64. The model must be the one that "
    "tokenized them (the same fingerprint)."
)
EXAMPLE = """\
example:
  semhitok detokenize tokens/ --model runs/s2/model -o tokens-check/ --limit 16"""
SHEET_NAME = "contact_sheet"
SHEET_MAX = 64


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(NAME, help=HELP, description=DESCRIPTION, epilog=EXAMPLE, formatter_class=common.HelpFormatter)
    p.add_argument("tokens_dir", metavar="TOKENS_DIR", help="folder written by 'semhitok tokenize' (with manifest.json)")
    p.add_argument("-o", "--output", required=True, metavar="OUT_DIR", help="folder for the PNG files (created if missing)")
    common.add_model_options(p)
    common.add_batch_size_option(p)
    p.add_argument("--limit", type=common.positive_int, default=SHEET_MAX, metavar="N", help=f"decode the first N images, in shard order (default {SHEET_MAX})")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import numpy as np
    import torch

    from ..data.token_shards import load_manifest, read_token_shards
    from ..image_io import save_image

    try:
        manifest = load_manifest(args.tokens_dir)
    except (FileNotFoundError, ValueError) as exc:
        raise CLIError(one_line(exc)) from exc
    common.refuse_overwriting_inputs([args.tokens_dir], args.output)
    with OutputDir(args.output) as out:
        loaded = common.load_model(args)
        model = loaded.model
        fingerprint = model.fingerprint()
        if manifest["fingerprint"] != fingerprint:
            raise CLIError(f"{args.tokens_dir} holds tokens of model {manifest['fingerprint']}, but this model is {fingerprint}; decode them with the model that made them")
        try:
            samples = list(islice(read_token_shards(args.tokens_dir, expect_fingerprint=fingerprint), args.limit))
        except (OSError, ValueError) as exc:
            raise CLIError(one_line(exc)) from exc
        if not samples:
            raise CLIError(f"{args.tokens_dir} holds no images ({manifest.get('bad_images', 0)} were undecodable)")
        # "contact_sheet" first, so that a sample of that name gets another file name
        stems = common.output_stems([SHEET_NAME, *(s.key.replace("/", "_") for s in samples)], len(samples) + 1)[1:]
        sheet: list[Tensor] = []
        starts = range(0, len(samples), args.batch_size)
        with common.progress(len(starts), "detokenize") as bar:
            for start in starts:
                chunk = samples[start : start + args.batch_size]
                ids = torch.from_numpy(np.stack([s.ids for s in chunk]))  # int32 (b, h, w)
                try:
                    images = model.decode(ids).cpu()
                except (ValueError, TypeError) as exc:  # ids out of range for this model
                    raise CLIError(f"{args.tokens_dir}: {one_line(exc)}") from exc
                for j, image in enumerate(images):
                    with out.writing(f"{stems[start + j]}.png") as path:
                        save_image(image, path)
                sheet += list(images[: max(0, SHEET_MAX - len(sheet))])
                bar.update(1)
        with out.writing(f"{SHEET_NAME}.png") as path:
            save_image(contact_sheet(torch.stack(sheet)), path)
        out.commit()
    note = " [UNTRAINED model: the images are meaningless]" if loaded.untrained else ""
    info(f"decoded {len(samples)} image{'s' if len(samples) != 1 else ''} of {manifest['images']} ({model.image_size}x{model.image_size}) and {SHEET_NAME}.png -> {args.output}{note}")
    return 0


def contact_sheet(images: Tensor, gap: int = 2) -> Tensor:
    """Float images (n, 3, S, S) -> one (3, H, W) grid, about square, rows filled left to right,
    on white with ``gap`` pixels between the images."""
    import torch

    n, c, s = images.shape[0], images.shape[1], images.shape[-1]
    cols = math.ceil(math.sqrt(n))
    rows = math.ceil(n / cols)
    sheet = torch.ones(c, rows * s + (rows + 1) * gap, cols * s + (cols + 1) * gap, dtype=images.dtype)
    for i, image in enumerate(images):
        top, left = gap + (i // cols) * (s + gap), gap + (i % cols) * (s + gap)
        sheet[:, top : top + s, left : left + s] = image
    return sheet
