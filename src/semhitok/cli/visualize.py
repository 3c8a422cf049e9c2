"""``semhitok visualize``: what the tokenizer does and what its codes mean, in one HTML page."""

from __future__ import annotations

import argparse
import json
from itertools import islice
from pathlib import Path

from . import common
from .bad_data import fresh_log, warn_if_any
from .common import OutputDir, info, refuse_overwriting_inputs
from .errors import CLIError, one_line

NAME = "visualize"
HELP = "code maps, code gallery, usage plots in one HTML page"
DESCRIPTION = (
    "Encode a dataset and draw what the codes mean: reconstructions, each image beside its semantic-code "
    "map, the image patches of the most used semantic codes (the paper's Fig. 5), one code's patches split by "
    "pixel sub-code, and codebook usage plots. Everything is embedded in OUT_DIR/index.html."
)
EXAMPLE = """\
example:
  semhitok visualize --model outputs/demo/runs/stage2/model --data assets/photos -o outputs/visual
  (then open outputs/visual/index.html in a browser)"""


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(NAME, help=HELP, description=DESCRIPTION, epilog=EXAMPLE, formatter_class=common.HelpFormatter)
    p.add_argument("--data", required=True, metavar="PATH", help="image folder, Fashion-MNIST folder or .tar shards")
    p.add_argument("-o", "--output", required=True, metavar="OUT_DIR", help="folder for index.html and the PNG files")
    common.add_model_options(p)
    common.add_batch_size_option(p)
    p.add_argument("--max-images", type=common.positive_int, default=512, metavar="N", help="encode at most N images (default 512)")
    p.add_argument("--top-codes", type=common.positive_int, default=12, metavar="N", help="gallery rows: the N most used semantic codes (default 12)")
    p.add_argument("--per-code", type=common.positive_int, default=16, metavar="N", help="patches shown per code (default 16)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import torch
    from torch.utils.data import DataLoader

    from ..data import BadDataError, TransformConfig, build_dataset, collate_samples
    from ..evaluation.codebook_stats import CodebookUsage
    from ..evaluation.gallery import PatchGallery, code_colors, code_grid, code_map, subcode_grid
    from ..evaluation.html import HtmlPage, png_bytes
    from ..evaluation.plots import usage_plots_png
    from ..image_io import psnr

    refuse_overwriting_inputs([args.data], args.output)
    bad_files = fresh_log(args.output)
    with OutputDir(args.output) as out:
        loaded = common.load_model(args)
        model = loaded.model
        device = next(model.parameters()).device
        try:
            dataset = build_dataset(args.data, TransformConfig(image_size=model.image_size, crop="center"), bad_files_log=bad_files)
        except (FileNotFoundError, ValueError) as exc:
            raise CLIError(one_line(exc)) from exc
        loader = DataLoader(dataset, batch_size=args.batch_size, collate_fn=collate_samples)
        total = args.max_images
        gallery = PatchGallery(model.grid_size, model.image_size // model.grid_size, per_code=args.per_code)
        usage = CodebookUsage(model.codebook_size, model.subcodebook_size)
        shown: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]] = []  # (image, reconstruction, semantic ids)
        scores: list[float] = []
        seen = 0
        bar = common.progress(-(-total // args.batch_size), "visualize")
        try:
            for batch in islice(loader, -(-total // args.batch_size)):
                images = batch.images[: total - seen].to(device)
                enc = model.encode(images)
                recon = model.decode(enc.ids)
                gallery.update(images, enc.semantic_ids, enc.pixel_ids)
                usage.update(enc.semantic_ids, enc.pixel_ids)
                scores += [psnr(a, b) for a, b in zip(images, recon)]
                for i in range(min(len(images), 8 - len(shown))):
                    shown.append((images[i].cpu(), recon[i].cpu(), enc.semantic_ids[i].cpu()))
                seen += len(images)
                bar.update(1)
        except BadDataError as exc:
            raise CLIError(one_line(exc)) from exc
        finally:
            bar.close()
        if seen == 0:
            raise CLIError(f"{args.data}: no images to visualize")

        stats = usage.compute(top_n=args.top_codes)
        page = HtmlPage(f"SemHiTok codes on {Path(args.data).name or args.data}")
        source = f"preset '{args.preset}', UNTRAINED (random weights)" if args.preset else f"model {args.model}"
        page.paragraph(f"{source}; {seen} images of {model.image_size} px, {model.grid_size}x{model.grid_size} tokens, "
                       f"K={model.codebook_size} semantic codes x m={model.subcodebook_size} pixel sub-codes.", note=True)
        page.heading("Summary")
        page.table([
            ("images", str(seen)),
            ("mean PSNR (dB)", f"{sum(scores) / len(scores):.2f}"),
            ("semantic codes used", f"{stats['semantic_used']} of {model.codebook_size} ({100 * stats['semantic_usage']:.1f}%)"),
            ("semantic perplexity", f"{stats['semantic_perplexity']:.1f}"),
            ("sub-code usage (mean over used codes)", f"{100 * stats['subcodebook_usage']:.1f}%"),
        ])
        files: dict[str, bytes] = {}

        def add(name: str, png: bytes, caption: str) -> None:
            files[name] = png
            page.figure(png, caption)

        page.heading("Reconstructions (original above, reconstruction below)")
        top = torch.cat([s[0] for s in shown], dim=-1)
        bottom = torch.cat([s[1] for s in shown], dim=-1)
        add("reconstructions.png", png_bytes(torch.cat([top, bottom], dim=-2)), f"{len(shown)} images")
        page.heading("Semantic code maps (each token coloured by its semantic code)")
        colors = code_colors(model.codebook_size)
        for i, (image, _, sem) in enumerate(shown[:4]):
            as_u8 = (image.clamp(0, 1) * 255).round().to(torch.uint8)
            add(f"code_map_{i}.png", png_bytes(code_map(as_u8, sem, colors)), f"image {i}")
        page.heading(f"Code gallery: patches of the {args.top_codes} most used semantic codes (one row per code)")
        codes = gallery.most_used(args.top_codes)
        page.paragraph("Rows, top to bottom: codes " + ", ".join(f"{c} ({gallery.count(c)} tokens)" for c in codes), note=True)
        add("gallery.png", png_bytes(code_grid(gallery, codes, columns=args.per_code)), "each row: random patches assigned to one semantic code")
        if codes:
            # Of the most used codes, the one whose tokens spread over the most sub-codes.
            split = max(codes, key=lambda c: (int((usage.pair_counts[c] > 0).sum()), gallery.count(c)))
            page.heading(f"Semantic code {split} split by pixel sub-code (one row per sub-code j = 0..{model.subcodebook_size - 1})")
            add("subcodes.png", png_bytes(subcode_grid(gallery, split, model.subcodebook_size, columns=args.per_code)), "empty rows: sub-codes no patch here used")
        page.heading("Codebook usage")
        add("usage.png", usage_plots_png(usage.semantic_counts, usage.pair_counts), "usage vs rank, tokens per code, sub-codes per code")

        for name, png in files.items():
            out.write_bytes(name, png)
        with out.writing("index.html") as path:
            page.write(path)
        out.write_text("stats.json", json.dumps({k: v for k, v in stats.items()}, indent=2, default=str) + "\n")
        out.commit()
    warn_if_any(bad_files)
    info(f"wrote {Path(args.output) / 'index.html'} ({seen} images; open it in a browser)")
    return 0
