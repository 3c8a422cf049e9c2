"""Train and judge the mini unified MLLM: SmolLM2-135M reads and draws through mini SemHiTok tokens.

    python scripts/mini_mllm_results.py --data data/cfm

tokenizes the training split once (``semhitok tokenize`` with the shipped mini-semhitok), trains
every run of RUNS with ``semhitok train configs/mini/CONFIG`` (plus the run's overrides) on
those tokens, and scores each finished model on the test split with the shipped independent judge
(never the teacher): understanding (class and colour words of its answers), generation (the
judge's class and colour verdicts on images drawn from test captions, and the Fréchet distance of
its features to real test images), the same on captions of the colour x class pairs held out of
training (composition), the teacher-forced NLL of real test images' ids after their captions, and,
for the main run, all of it against the CFG scale. Each measured run
is stored as docs/results/mllm/NAME.json (a run whose JSON exists is not trained or measured again
unless --rerun names it); docs/results.md is rewritten at the end (its MLLM section reads these
files). Run folders go to --out; an interrupted run continues from its last checkpoint. A run's
training record (steps, wall time, loss curves) is stored as docs/results/mllm/training/NAME.json
as soon as it has trained, so ``--measure-from mllm-dual=mini-mllm`` can later measure the shipped
copy of the main run on a machine without its run folder.

Everything here is measured; no number is typed in by hand.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from script_common import cpu_name  # beside this script

if TYPE_CHECKING:
    from semhitok.data.colour_fashion import LabelledSplit
    from semhitok.mllm import SemHiTokMLLM

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = ROOT / "src" / "semhitok" / "configs" / "mini"
LONG, SHORT = "mllm.yaml", "mllm_short.yaml"  # the main run's recipe; the first mini-mllm's, which the ablations keep
DOCS = ROOT / "docs"
STORE = DOCS / "results" / "mllm"
SEMHITOK = [sys.executable, "-m", "semhitok"]


@dataclass
class Run:
    """One ``semhitok train configs/mini/CONFIG`` run with ``overrides``."""

    name: str
    overrides: list[str] = field(default_factory=list)
    steps: int | None = None  # None: the config's run.max_steps
    cfg_sweep: bool = False  # score generation at every scale of --cfg-sweep (else at --cfg only)
    draws: bool = True  # trained on generation samples, so its drawing is scored
    reads: bool = True  # trained on understanding samples, so its reading is scored
    probe: bool = False  # logs caption-following on the validation split while it trains (eval.data = --data)
    config: str = SHORT  # in configs/mini/


ABLATION_STEPS = 300  # a third of the main run: four ablation runs cost about what the main run does
# The ablations train on understanding samples only, as the paper's Tab. 7 measures understanding
# only. With the main run's half-and-half mix, 300 steps left the Dual-MLP run reading at chance
# (class 13.6%, colour 7.8% on 500 test images; measured 2026-12-02): the main run only starts to
# read past ~400 steps, i.e. ~200 steps' worth of understanding samples.
UNDERSTANDING_ONLY = ["data.mix.understanding=1.0", "data.mix.generation=0.0"]
# Tab. 7's adapters once more for drawing, on generation samples only, for as many steps as the
# reading ablations (about 16 min each on 2 cores). Judged drawings of the main run are still near
# chance after 900 steps, so the image-id NLL of real test images is the measure that separates them.
GENERATION_ONLY = ["data.mix.understanding=0.0", "data.mix.generation=1.0"]


# Drawing-recipe experiments: short runs compared on caption-following (the caption information and
# the generative classifier on validation images, logged while they train), which per-id NLL and
# judged drawings at this budget cannot see. Each changes one thing from the one before it.
RECIPE_STEPS = 200
RECIPE = ["mllm.system_prompt=", "data.mix.understanding=0.25", "data.mix.generation=0.75", "eval.every=100", "eval.images=32"]
RECIPES = {  # labelled in mini_mllm_report.RECIPE_LABELS
    "rec-base": [],
    "rec-noise": ["data.image_noise=0.2"],
    "rec-noise-lr": ["data.image_noise=0.2", "optim.adapter_lr=2.0e-3", "optim.adapter_schedule=constant"],
}


def runs() -> list[Run]:
    return [
        # the paper's recipe in miniature: Dual-MLP adapter, shared head, LoRA; shipped as mini-mllm
        # (its caption-following on validation images logged every 400 steps: the long run's curve)
        Run("mllm-dual", ["eval.every=400"], cfg_sweep=True, probe=True, config=LONG),
        # Tab. 7 (the input adapter) and Tab. 4 (the LLM reads the semantic codes alone), on a
        # shorter understanding-only schedule, all four alike
        Run("abl-dual", UNDERSTANDING_ONLY, ABLATION_STEPS, draws=False),
        Run("abl-single", [*UNDERSTANDING_ONLY, "mllm.adapter=single"], ABLATION_STEPS, draws=False),
        Run("abl-table", [*UNDERSTANDING_ONLY, "mllm.adapter=table"], ABLATION_STEPS, draws=False),
        Run("abl-semantic", [*UNDERSTANDING_ONLY, "mllm.adapter=semantic"], ABLATION_STEPS, draws=False),
        # Tab. 7's adapters for drawing (the semantic-only adapter cannot draw: the pixel codes are its input's missing half)
        Run("gen-dual", GENERATION_ONLY, ABLATION_STEPS, reads=False),
        Run("gen-single", [*GENERATION_ONLY, "mllm.adapter=single"], ABLATION_STEPS, reads=False),
        Run("gen-table", [*GENERATION_ONLY, "mllm.adapter=table"], ABLATION_STEPS, reads=False),
        *(Run(name, [*RECIPE, *extra], RECIPE_STEPS, draws=False, reads=False, probe=True) for name, extra in RECIPES.items()),
    ]


# ---- training ----------------------------------------------------------------------------------
def tokenize(data: Path, out: Path) -> Path:
    """The training split as token shards (tokenized once, reused by every run)."""
    tokens = out / "tokens-train"
    if not (tokens / "manifest.json").is_file():
        command = [*SEMHITOK, "tokenize", str(data / "images" / "train"), "-o", str(tokens), "--model", "mini-semhitok"]
        print("$", " ".join(command[2:]), flush=True)
        subprocess.run(command, check=True)
    return tokens


def train(run: Run, out: Path, tokens: Path, args: argparse.Namespace) -> Path:
    """The run's model folder, training it when needed (resuming an interrupted run)."""
    folder = out / run.name
    if (folder / "model" / "mllm_config.json").is_file():
        return folder / "model"
    command = [*SEMHITOK, "train", str(CONFIGS / run.config), "--data", str(tokens), "--out", str(folder), "--quiet"]
    if args.quick:
        command += ["--max-steps", "2", "data.batch_size=2", "run.checkpoint_every=2"]
    elif args.steps is not None or run.steps is not None:
        command += ["--max-steps", str(args.steps or run.steps)]
    if args.llm is not None:
        command.append(f"llm={args.llm}")
    if run.probe:
        command.append(f"eval.data={args.data}")
    command += run.overrides
    if (folder / "checkpoints").is_dir() and any((folder / "checkpoints").glob("step_*")):
        command.append("--resume")
    elif folder.exists():
        shutil.rmtree(folder)
    print("$", " ".join(command[2:]), flush=True)
    started = time.perf_counter()
    subprocess.run(command, check=True)
    with open(folder / "wall_seconds.txt", "a") as f:  # one line per call (a resumed run has several)
        f.write(f"{time.perf_counter() - started:.1f}\n")
    return folder / "model"


def train_info(folder: Path, points: int = 60) -> dict[str, Any]:
    """Steps, wall time, throughput and the loss curves (at most ``points`` points) of a run."""
    lines = [json.loads(line) for line in (folder / "metrics.jsonl").read_text().splitlines() if line.strip()]
    wall = folder / "wall_seconds.txt"
    every = max(1, len(lines) // points)
    curve = [{k: r[k] for k in ("step", "loss", "text_nll", "image_nll") if k in r} for r in lines[::every]]
    if curve[-1]["step"] != lines[-1]["step"]:
        curve.append({k: lines[-1][k] for k in ("step", "loss", "text_nll", "image_nll") if k in lines[-1]})
    probed = ("step", "samples_seen", "caption_info", "caption_info_se", "caption_info_first_id", "gen_cls_colour", "gen_cls_class")
    return {
        "steps": lines[-1]["step"],
        "last_loss": lines[-1]["loss"],
        "tokens_per_second": lines[-1].get("tokens_per_second"),
        "samples_per_second": lines[-1].get("samples_per_second"),
        "wall_seconds": sum(float(x) for x in wall.read_text().split()) if wall.is_file() else None,
        "curve": curve,
        # caption-following on validation images, at every step the run measured it (eval.every)
        "caption_curve": [{k: r[k] for k in probed if k in r} for r in lines if r.get("caption_info") is not None],
    }


# ---- measuring ---------------------------------------------------------------------------------
def measure(run: Run, model_dir: Path, data: Path, args: argparse.Namespace, figures: Path) -> dict[str, Any]:
    """Understanding and generation scores of one trained MLLM on the test split."""
    from semhitok.data.colour_fashion import load_split
    from semhitok.evaluation.judge import Judge
    from semhitok.evaluation.mllm_eval import evaluate_generation, evaluate_understanding
    from semhitok.evaluation.mllm_scores import held_out_mask
    from semhitok.evaluation.mllm_showcase import QUESTION  # one of the training questions (configs/mini/mllm*.yaml)
    from semhitok.mllm import SemHiTokMLLM
    from semhitok.pretrained import pretrained_path

    torch.manual_seed(0)
    mm = SemHiTokMLLM.from_pretrained(model_dir).eval()
    judge = Judge.from_pretrained(pretrained_path("mini-judge"))
    test = load_split(data, "test")
    images = test.float_images()
    held = held_out_mask(test.labels, test.colours)
    # The reference of every FD: the judge's features of real test images.
    real = judge.judge(images[: args.reference_images]).features

    n_u, n_g = args.understanding_images, args.generation_images
    held_idx = held.nonzero().flatten()[: args.held_out_images]
    understanding = None
    if run.reads:
        u = evaluate_understanding(mm, images[:n_u], test.labels[:n_u], test.colours[:n_u], QUESTION)
        examples = [{"caption": c, "answer": a} for c, a in zip(test.captions[:16], u.answers[:16])]
        u_held = evaluate_understanding(mm, images[held_idx], test.labels[held_idx], test.colours[held_idx], QUESTION)
        understanding = {"all": u.scores.to_dict(), "held_out": u_held.scores.to_dict(), "question": QUESTION, "examples": examples}

    scales = args.cfg_sweep if run.cfg_sweep else [args.cfg] if run.draws else []
    generation: dict[str, Any] = {}
    for scale in scales:
        g = evaluate_generation(mm, judge, test.captions[:n_g], test.labels[:n_g], test.colours[:n_g], real, cfg_scale=scale, seed=args.seed)
        g_held = evaluate_generation(mm, judge, [test.captions[i] for i in held_idx], test.labels[held_idx], test.colours[held_idx], real, cfg_scale=scale, seed=args.seed)
        generation[f"{scale:g}"] = {"all": g.scores.to_dict(), "held_out": g_held.scores.to_dict()}
        if scale == args.cfg:
            figures.mkdir(parents=True, exist_ok=True)
            save_grid(g.images[:32], figures / f"{run.name}-generated.png")
            save_grid(g_held.images[:16], figures / f"{run.name}-generated-held-out.png")
            generation["captions"] = test.captions[: min(32, n_g)]
            generation["held_out_captions"] = [test.captions[i] for i in held_idx[:16]]
    return {
        "understanding": understanding,
        "generation": generation,
        "image_nll": image_nll(mm, test, images, held_idx, args.nll_images) if run.draws else None,
        "cfg": args.cfg,
        "seed": args.seed,
        "reference_images": len(real),
    }


def image_nll(mm: SemHiTokMLLM, test: LabelledSplit, images: torch.Tensor, held_idx: torch.Tensor, n: int) -> dict[str, Any]:
    """Teacher-forced NLL per image id of real test images after their captions: the first ``n``
    of the split's ``images``, and those at ``held_idx`` (held-out pairs)."""
    from semhitok.evaluation.mllm_eval import evaluate_image_nll

    result = {}
    for key, idx in (("all", torch.arange(min(n, len(images)))), ("held_out", held_idx)):
        e = evaluate_image_nll(mm, images[idx], [test.captions[i] for i in idx.tolist()])
        result[key] = {"nll": e.mean, "se": e.standard_error, "images": len(idx)}
    return result


def _measure_from(pairs: list[str], by_name: dict[str, Run], store: Path, ap: argparse.ArgumentParser) -> dict[str, Path]:
    """``--measure-from RUN=DIR`` -> {RUN: model folder}; each RUN must have its training record."""
    from semhitok.cli.model_loading import model_folder

    sources = {}
    for pair in pairs:
        name, _, where = pair.partition("=")
        if name not in by_name or not where:
            ap.error(f"--measure-from {pair}: expected RUN=DIR with RUN one of {', '.join(by_name)}")
        if not (store / "training" / f"{name}.json").is_file():
            ap.error(f"--measure-from {pair}: {store / 'training' / (name + '.json')} is missing (it is written when the run trains)")
        sources[name] = model_folder(where)
    return sources


def save_grid(images: torch.Tensor, path: Path, per_row: int = 8, scale: int = 2) -> None:
    """(N, 3, S, S) in [0, 1] -> one PNG, ``per_row`` images a row, each enlarged ``scale`` times."""
    from semhitok.evaluation.html import png_bytes

    rows = [torch.cat(list(images[i : i + per_row]), dim=-1) for i in range(0, len(images), per_row)]
    width = rows[0].shape[-1]
    rows = [torch.nn.functional.pad(r, (0, width - r.shape[-1]), value=1.0) for r in rows]
    grid = torch.cat(rows, dim=-2).repeat_interleave(scale, -1).repeat_interleave(scale, -2)
    path.write_bytes(png_bytes(grid))


# ---- driver ------------------------------------------------------------------------------------
def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", type=Path, required=True, help="a colour Fashion-MNIST build (semhitok data colour-fashion-mnist)")
    ap.add_argument("--out", type=Path, default=Path("runs/mllm"), help="where the token shards and run folders go")
    ap.add_argument("--only", nargs="+", metavar="RUN", help="train and measure only these runs")
    ap.add_argument("--rerun", nargs="+", default=[], metavar="RUN", help="measure these again even if their JSON exists ('all' for every run)")
    ap.add_argument(
        "--measure-from", nargs="+", default=[], metavar="RUN=DIR",
        help="measure RUN from this MLLM folder or shipped name (e.g. mllm-dual=mini-mllm) instead of its run folder; "
        "its training record is the training/RUN.json stored when it trained",
    )
    ap.add_argument("--steps", type=int, help="optimizer steps of every run (default: the config's run.max_steps for the main run, %d for the ablations)" % ABLATION_STEPS)
    ap.add_argument("--llm", help="another causal LM (a Hugging Face folder) in place of the config's smollm2-135m")
    ap.add_argument("--understanding-images", type=int, default=500, help="test images the model answers about")
    # Drawing costs about 1.4 s an image with CFG on 2 cores (64 ids, 2 rows each): the main run's
    # sweep draws 5 x (200 + 100) images, about 35 min; each drawing ablation (200 + 100) about 7
    # min; the reading ablations do not draw.
    ap.add_argument("--generation-images", type=int, default=200, help="test captions the model draws from")
    ap.add_argument("--held-out-images", type=int, default=100, help="test items of held-out colour x class pairs, for all three")
    ap.add_argument("--nll-images", type=int, default=500, help="test images whose ids' NLL after their captions is measured")
    ap.add_argument("--reference-images", type=int, default=2000, help="real test images, the reference of the FD")
    ap.add_argument("--cfg", type=float, default=3.0, help="guidance scale of every run's generation scores")
    ap.add_argument("--cfg-sweep", type=float, nargs="+", default=[1.0, 2.0, 3.0, 5.0, 7.0], help="scales for the main run")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--quick", action="store_true", help="2 steps per run, few images, results to --out (a smoke test; docs untouched)")
    args = ap.parse_args()
    if args.cfg not in args.cfg_sweep:
        ap.error(f"--cfg {args.cfg:g} must be one of --cfg-sweep")
    if args.quick:
        args.understanding_images = args.generation_images = args.held_out_images = args.nll_images = 8
        args.reference_images = 64
    all_runs = runs()
    by_name = {r.name: r for r in all_runs}
    unknown = sorted(set(args.only or []) - set(by_name))
    if unknown:
        ap.error(f"unknown run(s): {', '.join(unknown)} (runs: {', '.join(by_name)})")
    chosen = [by_name[n] for n in args.only] if args.only else all_runs
    store = (args.out / "measured") if args.quick else STORE
    figures = store / "figures"
    store.mkdir(parents=True, exist_ok=True)
    sources = _measure_from(args.measure_from, by_name, store, ap)
    pending = [r for r in chosen if not (store / f"{r.name}.json").is_file() or {"all", r.name} & set(args.rerun)]
    tokens = tokenize(args.data, args.out) if any(r.name not in sources for r in pending) else None
    failed = []
    for run in pending:
        if run.name in sources:
            model_dir = sources[run.name]
        else:
            try:
                model_dir = train(run, args.out, tokens, args)
            except subprocess.CalledProcessError as exc:
                print(f"{run.name}: training failed (exit {exc.returncode}); going on with the other runs", flush=True)
                failed.append(run.name)
                continue
            # Stored at once: the training record outlives the run folder (a later session can
            # measure the shipped copy of the model with --measure-from).
            (store / "training").mkdir(exist_ok=True)
            (store / "training" / f"{run.name}.json").write_text(json.dumps({**train_info(model_dir.parent), "cpu": cpu_name()}, indent=2) + "\n")
        trained = json.loads((store / "training" / f"{run.name}.json").read_text())
        metrics = measure(run, model_dir, args.data, args, figures)
        record = {"run": run.name, "config": f"configs/mini/{run.config}", "overrides": run.overrides, "draws": run.draws, "reads": run.reads, "measured_from": str(model_dir),
                  "train": {k: v for k, v in trained.items() if k != "cpu"}, "train_cpu": trained["cpu"], "metrics": metrics, "cpu": cpu_name()}
        (store / f"{run.name}.json").write_text(json.dumps(record, indent=2) + "\n")
        read = (metrics["understanding"] or {}).get("all", "not trained to read")
        drawn = metrics["generation"].get(f"{args.cfg:g}", {}).get("all", "not trained to draw")
        print(f"{run.name}: {json.dumps(read)} {json.dumps(drawn)}", flush=True)
    test = None  # the test split, loaded once if a record needs its image NLL
    for run in chosen:  # records measured before the image NLL existed get it added (it is cheap)
        path = store / f"{run.name}.json"
        record = json.loads(path.read_text()) if path.is_file() else None
        if record is None or not run.draws or record["metrics"].get("image_nll") is not None:
            continue
        model_dir = sources.get(run.name) or args.out / run.name / "model"
        if not (model_dir / "mllm_config.json").is_file():
            print(f"{run.name}: no image NLL yet; measure it with --measure-from {run.name}=DIR", flush=True)
            continue
        from semhitok.data.colour_fashion import load_split
        from semhitok.evaluation.mllm_scores import held_out_mask
        from semhitok.mllm import SemHiTokMLLM

        if test is None:
            test = load_split(args.data, "test")
            images = test.float_images()
            held_idx = held_out_mask(test.labels, test.colours).nonzero().flatten()[: args.held_out_images]
        record["metrics"]["image_nll"] = image_nll(SemHiTokMLLM.from_pretrained(model_dir).eval(), test, images, held_idx, args.nll_images)
        record["image_nll_measured_from"] = str(model_dir)
        path.write_text(json.dumps(record, indent=2) + "\n")
        print(f"{run.name}: image NLL {json.dumps(record['metrics']['image_nll'])}", flush=True)
    if args.quick:
        from mini_mllm_report import mllm_section  # beside this script

        (args.out / "results.md").write_text("\n".join(mllm_section(store, args.out)) + "\n")
    else:
        from mini_world_report import write_report  # beside this script

        write_report(DOCS / "results" / "runs", DOCS / "results.md", args.data, None)
    if failed:
        print(f"failed runs: {', '.join(failed)}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    sys.exit(main())
