"""``semhitok decode``: a token file -> one PNG per image."""

from __future__ import annotations

import argparse
from pathlib import Path

from . import common
from .common import OutputDir, info, warn

NAME = "decode"
HELP = "token file from 'semhitok encode' -> images (one PNG each)"
DESCRIPTION = "Decode a token file written by 'semhitok encode' back into images, one PNG per image."
EXAMPLE = """\
example:
  semhitok decode tokens.npz --model runs/stage2/model -o decoded/

Outputs are named after the encoded files (photos/cat.jpg -> decoded/cat.png), else
image_0000.png, image_0001.png, ... A token file made by a model with other codebooks (another
fingerprint) is refused unless --force."""


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(NAME, help=HELP, description=DESCRIPTION, epilog=EXAMPLE, formatter_class=common.HelpFormatter)
    p.add_argument("tokens", metavar="TOKENS.npz", help="token file written by 'semhitok encode'")
    p.add_argument("-o", "--output", required=True, metavar="OUTDIR", help="folder for the PNG files (created if missing)")
    common.add_model_options(p)
    common.add_batch_size_option(p)
    p.add_argument("--force", action="store_true", help="decode even if the token file was made by a model with other codebooks")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import torch

    from ..image_io import save_image
    from .tokenfile import check_against_model, read_tokens

    tokens = read_tokens(args.tokens)
    common.refuse_overwriting_inputs([args.tokens], args.output)
    with OutputDir(args.output) as out:
        loaded = common.load_model(args)
        model = loaded.model
        same = check_against_model(args.tokens, tokens, model, force=args.force)
        if not same:
            warn(f"{args.tokens} was made by model {tokens.fingerprint}, this model is {model.fingerprint()}; decoding anyway (--force)")
        n = tokens.ids.shape[0]
        stems = common.output_stems(tokens.files, n)
        # Decoded images are named after the encoded files: never replace one of those originals.
        originals = [args.tokens, *(tokens.files or [])]
        for stem in stems:
            common.refuse_overwriting_inputs(originals, Path(args.output) / f"{stem}.png")
        ids = torch.from_numpy(tokens.ids)
        starts = range(0, n, args.batch_size)
        with common.progress(len(starts), "decode") as bar:
            for start in starts:
                images = model.decode(ids[start : start + args.batch_size]).cpu()
                for j, image in enumerate(images):
                    with out.writing(f"{stems[start + j]}.png") as path:
                        save_image(image, path)
                bar.update(1)
        out.commit()
    note = " [UNTRAINED model: the images are meaningless]" if loaded.untrained else ""
    info(f"decoded {n} image{'s' if n != 1 else ''} ({model.image_size}x{model.image_size}) -> {args.output}{note}")
    return 0
