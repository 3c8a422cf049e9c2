"""``semhitok encode``: images -> a token file (.npz)."""

from __future__ import annotations

import argparse

from . import common
from .common import OutputFile, info

NAME = "encode"
HELP = "images -> token ids, saved in an .npz token file"
DESCRIPTION = "Encode images into SemHiTok token ids (flat ids k*m + j on an h x w grid) and save them as an .npz token file."
EXAMPLE = """\
example:
  semhitok encode photos/*.jpg --model runs/stage2/model -o tokens.npz
  semhitok decode tokens.npz --model runs/stage2/model -o decoded/

The token file holds ids (N, h, w) = semantic_id * m + pixel_id, the semantic and pixel ids,
the grid, K and m, the model's fingerprint and the input file names."""


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(NAME, help=HELP, description=DESCRIPTION, epilog=EXAMPLE, formatter_class=common.HelpFormatter)
    p.add_argument("images", nargs="+", metavar="IMG", help="image files (any format PIL reads; sizes may differ)")
    p.add_argument("-o", "--output", required=True, metavar="TOKENS.npz", help="token file to write")
    common.add_model_options(p)
    common.add_resize_option(p)
    common.add_batch_size_option(p)
    common.add_precision_option(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import numpy as np
    import torch

    from ..precision import resolve_and_warn
    from .tokenfile import FORMAT_VERSION, TokenFile, write_tokens

    common.check_image_paths(args.images)
    common.refuse_overwriting_inputs(args.images, args.output)
    with OutputFile(args.output) as out:
        loaded = common.load_model(args)
        model = loaded.model
        device = next(model.parameters()).device
        precision = resolve_and_warn(args.precision, device, "--precision")
        ids, semantic, pixel = [], [], []
        for _, batch in common.image_batches(args.images, model.image_size, args.resize, args.batch_size, desc="encode"):
            with precision.autocast(device):
                enc = model.encode(batch.to(device), resize=args.resize)
            ids.append(enc.ids.cpu())
            semantic.append(enc.semantic_ids.cpu())
            pixel.append(enc.pixel_ids.cpu())
        g = model.grid_size
        tokens = TokenFile(
            ids=torch.cat(ids).numpy().astype(np.int64),
            grid=(g, g),
            codebook_size=model.codebook_size,
            subcodebook_size=model.subcodebook_size,
            fingerprint=model.fingerprint(),
            format_version=FORMAT_VERSION,
            files=list(args.images),
            semantic_ids=torch.cat(semantic).numpy(),
            pixel_ids=torch.cat(pixel).numpy(),
        )
        with out.open("wb") as f:
            write_tokens(f, tokens)
        out.commit()
    n = tokens.ids.shape[0]
    note = " [UNTRAINED model: the tokens are meaningless]" if loaded.untrained else ""
    info(f"encoded {n} image{'s' if n != 1 else ''} into {g}x{g} tokens each (vocabulary {model.vocab_size}, model {tokens.fingerprint}) -> {args.output}{note}")
    return 0
