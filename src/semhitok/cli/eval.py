"""``semhitok eval``: the fixed evaluation protocol -> report.json, report.md, report.html."""

from __future__ import annotations

import argparse
import contextlib
import json
from pathlib import Path

from . import common
from .bad_data import fresh_log, warn_if_any
from .common import OutputDir, info, refuse_overwriting_inputs, warn
from .errors import CLIError, one_line

NAME = "eval"
HELP = "rFID / PSNR / SSIM / LPIPS and codebook usage: a report"
DESCRIPTION = (
    "Evaluate reconstructions on a dataset with a fixed protocol (shorter side to the model size, centre crop, "
    "first N images): Fréchet distance, PSNR, SSIM, LPIPS, bits per image, codebook usage. A number is called "
    "rFID only when it comes from the FID Inception weights (--fid-weights)."
)
EXAMPLE = """\
examples:
  semhitok eval --model runs/s2/model --data imagenet/val -o reports/s2 --fid-weights pt_inception-2015-12-05-6726825d.pth \\
      --lpips-weights vgg16-397923af.pth --max-images 50000
  semhitok eval --model outputs/demo/runs/stage2/model --data assets/photos -o reports/demo   (no real weights: FD, not rFID)"""


def register(subparsers: argparse._SubParsersAction) -> None:
    from ..evaluation.fid_features import EXTRACTORS

    p = subparsers.add_parser(NAME, help=HELP, description=DESCRIPTION, epilog=EXAMPLE, formatter_class=common.HelpFormatter)
    p.add_argument("--data", required=True, metavar="PATH", help="image folder, Fashion-MNIST folder or .tar shards")
    p.add_argument("-o", "--output", required=True, metavar="REPORT_DIR", help="folder for report.json, report.md, report.html")
    common.add_model_options(p)
    common.add_batch_size_option(p)
    p.add_argument("--max-images", type=common.positive_int, default=50000, metavar="N", help="evaluate the first N images (default 50000)")
    p.add_argument("--fid-weights", metavar="FILE", help="FID Inception weights (pt_inception-2015-12-05-6726825d.pth or .safetensors)")
    p.add_argument("--feature-extractor", choices=EXTRACTORS, default="teacher", help="without --fid-weights: the stand-in feature space, reported as FD, never rFID (default: teacher, the tokenizer's own frozen SigLIP/CLIP, mean-pooled)")
    p.add_argument("--lpips-weights", metavar="FILE", help="torchvision-layout VGG16 weights for LPIPS (heads come from torchmetrics)")
    p.add_argument("--cache-dir", default=str(Path.home() / ".cache" / "semhitok" / "fid_stats"), metavar="DIR", help="reference statistics cache (default ~/.cache/semhitok/fid_stats)")
    common.add_precision_option(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ..data import BadDataError
    from ..evaluation.evaluate import evaluate, report_markdown, report_rows
    from ..evaluation.fid_features import build_extractor
    from ..evaluation.html import HtmlPage
    from ..evaluation.plots import usage_plots_png

    for flag, path in (("--fid-weights", args.fid_weights), ("--lpips-weights", args.lpips_weights)):
        if path and not Path(path).exists():
            raise CLIError(f"{flag} {path}: no such file")
    refuse_overwriting_inputs([args.data], args.output)
    rank = _join_torchrun()
    # Under torchrun every rank evaluates its share of the images; rank 0 alone writes the report.
    bad_files = fresh_log(args.output)
    with OutputDir(args.output) if rank == 0 else contextlib.nullcontext() as out, _cache_warnings():
        model = common.load_model(args).model
        # A refused, damaged or foreign --fid-weights / --lpips-weights file: a WeightsFileError or
        # a ValueError naming the keys that do not fit; both name the file.
        try:
            extractor = build_extractor(args.fid_weights, args.feature_extractor, model)
        except ValueError as exc:
            raise CLIError(f"--fid-weights: {one_line(exc)}") from exc
        try:
            lpips, lpips_label = _lpips(args.lpips_weights)
        except (ValueError, FileNotFoundError) as exc:
            raise CLIError(f"--lpips-weights: {one_line(exc)}") from exc
        try:
            bar = common.progress(-(-args.max_images // args.batch_size), "eval")
            try:
                report, usage = evaluate(model, args.data, extractor=extractor, lpips=lpips, lpips_label=lpips_label, max_images=args.max_images,
                                         batch_size=args.batch_size, cache_dir=args.cache_dir, precision=args.precision, progress=bar,
                                         bad_files_log=bad_files)
            finally:
                bar.close()
        except (BadDataError, FileNotFoundError, ValueError) as exc:
            raise CLIError(one_line(exc)) from exc
        if rank != 0:
            return 0
        report["model"]["source"] = f"preset {args.preset} (UNTRAINED, random weights)" if args.preset else str(args.model)
        out.write_text("report.json", json.dumps(report, indent=2) + "\n")
        out.write_text("report.md", report_markdown(report))
        page = HtmlPage("SemHiTok evaluation")
        page.paragraph(f"model: {report['model']['source']}; data: {report['data']}; {report['images']} images", note=True)
        page.table(report_rows(report), header=("metric", "value"))
        page.paragraph(f"protocol: {report['protocol']}", note=True)
        if not report["frechet"]["is_rfid"]:
            page.paragraph("The Fréchet distance is NOT rFID: it was not computed with the FID Inception weights.")
        page.heading("Codebook usage")
        page.figure(usage_plots_png(usage.semantic_counts, usage.pair_counts), "usage vs rank, tokens per code, sub-codes per code")
        with out.writing("report.html") as path:
            page.write(path)
        out.commit()
    warn_if_any(bad_files)
    f = report["frechet"]
    info(f"{f['label']}: {f['value']:.3f}; PSNR {report['psnr']:.2f} dB; SSIM {report['ssim']:.4f}; "
         f"semantic codes used {report['codebook']['semantic_used']}/{report['codebook']['codebook_size']}; report: {Path(args.output) / 'report.html'}")
    return 0


def _lpips(weights: str | None):
    """(PerceptualLoss, label) with the real VGG16 file, else (None, None): no LPIPS number."""
    if not weights:
        return None, None
    from ..losses import PerceptualLoss

    return PerceptualLoss(vgg_weights=weights, head_weights="torchmetrics"), "LPIPS (VGG16, torchmetrics heads)"


@contextlib.contextmanager
def _cache_warnings():
    """The reference cache's warnings (a corrupt file recomputed, a cache folder that cannot be
    written) as ``semhitok: warning:`` lines."""
    import logging

    class _Warn(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            warn(record.getMessage())

    logger, handler = logging.getLogger("semhitok.evaluation"), _Warn(logging.WARNING)
    propagate, logger.propagate = logger.propagate, False
    logger.addHandler(handler)
    try:
        yield
    finally:
        logger.removeHandler(handler)
        logger.propagate = propagate


def _join_torchrun() -> int:
    """Join the process group when launched by torchrun (semhitok.distributed: gloo on CPU, NCCL on
    GPU, the SEMHITOK_DIST_TIMEOUT timeout); this rank."""
    from .. import distributed

    try:
        return distributed.setup().rank
    except ValueError as exc:  # a bad SEMHITOK_DIST_TIMEOUT
        raise CLIError(one_line(exc)) from exc
