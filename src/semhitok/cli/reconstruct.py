"""``semhitok reconstruct``: encode + decode images, save original | reconstruction, report PSNR."""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

from . import common
from .common import OutputDir, info

NAME = "reconstruct"
HELP = "encode + decode: side-by-side PNGs and PSNR per image"
DESCRIPTION = "Encode and decode images, save each original next to its reconstruction, and report PSNR."
EXAMPLE = """\
example:
  semhitok reconstruct photos/*.jpg --model runs/stage2/model -o recon/

For each image OUTDIR/<stem>_reconstruction.png shows the input after the resize policy (left)
and its reconstruction (right); OUTDIR/metrics.json holds the PSNR of each image and the mean
(dB, on [0, 1] images of the model's size)."""


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(NAME, help=HELP, description=DESCRIPTION, epilog=EXAMPLE, formatter_class=common.HelpFormatter)
    p.add_argument("images", nargs="+", metavar="IMG", help="image files (any format PIL reads; sizes may differ)")
    p.add_argument("-o", "--output", required=True, metavar="OUTDIR", help="folder for the side-by-side PNGs and metrics.json (created if missing)")
    common.add_model_options(p)
    common.add_resize_option(p)
    common.add_batch_size_option(p)
    p.set_defaults(func=run)


def side_by_side(original, reconstruction, gap: int | None = None, gap_value: float = 1.0):
    """(3, S, S) + (3, S, S) -> (3, S, 2S + gap): original | thin white separator | reconstruction."""
    import torch

    size = original.shape[-1]
    gap = max(2, size // 64) if gap is None else gap
    separator = torch.full((3, original.shape[-2], gap), gap_value, dtype=original.dtype, device=original.device)
    return torch.cat([original, separator, reconstruction.to(original.dtype)], dim=-1)


def run(args: argparse.Namespace) -> int:
    from ..image_io import psnr, save_image

    common.check_image_paths(args.images)
    common.refuse_overwriting_inputs(args.images, args.output)
    with OutputDir(args.output) as out:
        loaded = common.load_model(args)
        model = loaded.model
        device = next(model.parameters()).device
        stems = common.output_stems(args.images, len(args.images))
        for name in [*(f"{stem}_reconstruction.png" for stem in stems), "metrics.json"]:
            common.refuse_overwriting_inputs(args.images, Path(args.output) / name)
        rows: list[dict] = []
        for idx, batch in common.image_batches(args.images, model.image_size, args.resize, args.batch_size, desc="reconstruct"):
            batch = batch.to(device)
            reconstruction = model.decode(model.encode(batch, resize=args.resize).ids)
            for j, i in enumerate(idx):
                name = f"{stems[i]}_reconstruction.png"
                with out.writing(name) as path:
                    save_image(side_by_side(batch[j], reconstruction[j]).cpu(), path)
                rows.append({"file": args.images[i], "output": name, "psnr_db": psnr(batch[j], reconstruction[j])})
        values = [r["psnr_db"] for r in rows]
        mean = sum(values) / len(values)
        metrics = {
            "model": loaded.source,
            "untrained": loaded.untrained,
            "fingerprint": model.fingerprint(),
            "image_size": model.image_size,
            "resize": args.resize,
            "metric": "PSNR in dB on [0, 1] images of the model's size (input after the resize policy vs reconstruction)",
            "images": [{**r, "psnr_db": _json_number(r["psnr_db"])} for r in rows],
            "mean_psnr_db": _json_number(mean),
        }
        out.write_text("metrics.json", json.dumps(metrics, indent=2, allow_nan=False) + "\n")
        out.commit()
    if loaded.untrained:
        info(f"NOTE: {loaded.untrained_note}.")
    width = max(len("image"), *(len(r["file"]) for r in rows), len("mean"))
    info(f"{'image':<{width}}  {'PSNR (dB)':>9}")
    for r in rows:
        info(f"{r['file']:<{width}}  {_fmt(r['psnr_db']):>9}")
    info(f"{'mean':<{width}}  {_fmt(mean):>9}")
    n = len(rows)
    info(f"wrote {n} side-by-side image{'s' if n != 1 else ''} (original | reconstruction, {model.image_size}x{model.image_size}) and metrics.json -> {args.output}")
    return 0


def _json_number(value: float) -> float | None:
    """JSON has no infinity: identical images (PSNR = inf) are written as null."""
    return round(value, 4) if math.isfinite(value) else None


def _fmt(value: float) -> str:
    return f"{value:.2f}" if math.isfinite(value) else "inf"
