"""``semhitok generate``: captions -> images, drawn by a SemHiTok MLLM with classifier-free guidance."""

from __future__ import annotations

import argparse
import json
import secrets
from pathlib import Path
from typing import TYPE_CHECKING

from . import common, mllm_options
from .common import OutputDir, info
from .errors import CLIError

if TYPE_CHECKING:
    from PIL import Image, ImageDraw

NAME = "generate"
HELP = "captions -> images (PNGs and a contact sheet) with a SemHiTok MLLM"
DESCRIPTION = (
    "Draw images for text prompts with a SemHiTok MLLM (the paper's text-to-image use): image ids are "
    "sampled with classifier-free guidance, then decoded by the tokenizer."
)
EXAMPLE = """\
example:
  semhitok generate "a red ankle boot" "a white sneaker" --model runs/mllm/final -o samples/ --n 4 --seed 0

OUTDIR/pPP_sS.png is sample S of prompt PP (p00_s0.png, p00_s1.png, ..., p01_s0.png, ...);
OUTDIR/contact_sheet.png shows them all, one row per prompt; OUTDIR/generate.json records the
prompts, the settings, the seed and which file shows which prompt. The n samples of a prompt are
one batch drawn with the seed, so the same prompt, --n and --seed give the same images on the
same device. Without --seed a seed is drawn and recorded in generate.json."""

CONTACT_SHEET = "contact_sheet.png"
RECORD = "generate.json"
_LABEL_WIDTH = 160  # pixels of the contact sheet's prompt column
_GAP = 2


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(NAME, help=HELP, description=DESCRIPTION, epilog=EXAMPLE, formatter_class=common.HelpFormatter)
    p.add_argument("prompts", nargs="+", metavar="PROMPT", help="text prompts (captions), one image set each")
    p.add_argument("-o", "--output", required=True, metavar="OUTDIR", help="folder for the PNGs, the contact sheet and generate.json (created if missing)")
    mllm_options.add_mllm_options(p)
    g = p.add_argument_group("sampling")
    g.add_argument("--n", type=common.positive_int, default=4, metavar="N", help="images per prompt (default 4)")
    g.add_argument("--cfg", type=mllm_options.non_negative_float, default=5.0, metavar="S", help="guidance scale s: 1 = conditional only, 0 = unconditional only (default 5)")
    g.add_argument("--cfg-schedule", choices=("constant", "linear"), default="constant", help="constant: s at every token (default); linear: from 1 at the first token to s at the last")
    g.add_argument("--temperature", type=mllm_options.non_negative_float, default=1.0, metavar="T", help="0 = greedy (default 1)")
    g.add_argument("--top-k", type=common.positive_int, default=None, metavar="K", help="keep the K most likely image ids (default: all)")
    g.add_argument("--top-p", type=mllm_options.probability, default=None, metavar="P", help="then keep the smallest set reaching probability P, in (0, 1] (default: all)")
    g.add_argument("--seed", type=mllm_options.seed, default=None, metavar="S", help="seed of the draws (default: a random one, recorded in generate.json)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ..image_io import tensor_to_pil

    prompts = _check_prompts(args.prompts)
    common.refuse_overwriting_inputs([args.model], args.output)
    # One seed for every prompt, drawn here when not given so that generate.json can reproduce the
    # run; short, to be easy to type back; from the OS, leaving torch's global generator alone.
    seed = args.seed if args.seed is not None else secrets.randbelow(2**31)
    with OutputDir(args.output) as out:
        loaded = mllm_options.load_mllm(args)
        mm = loaded.model
        precision = mllm_options.model_precision(args, mm)
        names = file_names(len(prompts), args.n)
        # 8-bit images, not float tensors, kept for the contact sheet: a quarter of the memory.
        rows: list[list[Image.Image]] = []
        files: list[dict] = []
        with common.progress(len(prompts), "generate") as bar:
            for i, prompt in enumerate(prompts):
                with precision.autocast(mm.image_head.weight.device):  # guidance and draws stay fp32
                    images = mm.generate_images(
                        [prompt] * args.n, cfg_scale=args.cfg, seed=seed, temperature=args.temperature,
                        top_k=args.top_k, top_p=args.top_p, cfg_schedule=args.cfg_schedule,
                    )
                rows.append([tensor_to_pil(image) for image in images])
                for s, image in enumerate(rows[-1]):
                    with out.writing(names[i][s]) as path:
                        image.save(path)  # as image_io.save_image writes it
                    files.append({"file": names[i][s], "prompt_index": i, "sample": s, "prompt": prompt})
                bar.update(1)
        with out.writing(CONTACT_SHEET) as path:
            contact_sheet(rows, prompts).save(path)
        out.write_text(RECORD, json.dumps(_record(args, loaded.folder, prompts, seed, mm.tokenizer.image_size, files, precision.name), indent=2) + "\n")
        out.commit()
    size = mm.tokenizer.image_size
    total = len(prompts) * args.n
    info(f"generated {total} image{'s' if total != 1 else ''} ({len(prompts)} prompt{'s' if len(prompts) != 1 else ''} x {args.n}, {size}x{size}, seed {seed}) -> {args.output}")
    return 0


def _check_prompts(prompts: list[str]) -> list[str]:
    for i, prompt in enumerate(prompts):
        if not prompt.strip():
            raise CLIError(f"prompt {i + 1} is empty; give a caption such as \"a red ankle boot\"")
    return list(prompts)


def file_names(num_prompts: int, n: int) -> list[list[str]]:
    """``names[i][s]`` = ``p{i}_s{s}.png``, zero-padded so the files sort in prompt order."""
    pw = max(2, len(str(num_prompts - 1)))
    sw = len(str(n - 1))
    return [[f"p{i:0{pw}d}_s{s:0{sw}d}.png" for s in range(n)] for i in range(num_prompts)]


def _record(args: argparse.Namespace, folder: Path, prompts: list[str], seed: int, size: int, files: list[dict], precision: str) -> dict:
    return {
        "model": str(folder),
        "tokenizer": args.tokenizer,
        "prompts": prompts,
        "settings": {
            "n": args.n,
            "cfg_scale": args.cfg,
            "cfg_schedule": args.cfg_schedule,
            "temperature": args.temperature,
            "top_k": args.top_k,
            "top_p": args.top_p,
            "precision": precision,
        },
        "seed": seed,
        "seed_given": args.seed is not None,
        "image_size": size,
        "contact_sheet": CONTACT_SHEET,
        "files": files,
    }


def contact_sheet(rows: list[list[Image.Image]], labels: list[str]) -> Image.Image:
    """One row per prompt: its label on the left, then its images (all S x S)."""
    from PIL import Image, ImageDraw

    size = rows[0][0].width
    columns = max(len(r) for r in rows)
    width = _LABEL_WIDTH + columns * (size + _GAP)
    height = len(rows) * (size + _GAP) + _GAP
    sheet = Image.new("RGB", (width, height), "white")
    draw = ImageDraw.Draw(sheet)
    for r, (images, label) in enumerate(zip(rows, labels)):
        top = _GAP + r * (size + _GAP)
        draw.multiline_text((4, top + 2), _wrap(label, draw, _LABEL_WIDTH - 8, max(1, size // 12)), fill="black")
        for c, image in enumerate(images):
            sheet.paste(image, (_LABEL_WIDTH + c * (size + _GAP), top))
    return sheet


def _wrap(text: str, draw: ImageDraw.ImageDraw, width: int, max_lines: int) -> str:
    """Break ``text`` into at most ``max_lines`` lines of at most ``width`` pixels ("..." if cut)."""
    lines: list[str] = []
    line = ""
    for word in text.split():
        candidate = f"{line} {word}".strip()
        if draw.textlength(candidate) <= width or not line:
            line = candidate
        else:
            lines.append(line)
            line = word
    lines.append(line)
    if len(lines) > max_lines:
        lines = lines[:max_lines]
        lines[-1] = lines[-1] + "..."
    # A single word longer than the column is cut by characters.
    return "\n".join(_cut(part, draw, width) for part in lines)


def _cut(line: str, draw: ImageDraw.ImageDraw, width: int) -> str:
    while len(line) > 1 and draw.textlength(line) > width:
        line = line[:-4] + "..." if len(line) > 4 else line[:-1]
    return line
