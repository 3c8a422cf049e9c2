"""Regenerate docs/results.md: the SemHiTok paper's tokenizer claims checked in the mini-world.

    python scripts/mini_world_results.py --data data/cfm

trains every run it needs with `semhitok train` (the shipped configs/mini/*.yaml plus the
overrides listed in RUNS), measures each finished model on the test split, and writes
docs/results.md with its tables and figures. Each measured run is stored as
docs/results/runs/NAME.json (its command, steps, wall time and metrics); a run whose JSON exists is
not trained again unless --rerun names it (or ``all``), so the work can be spread over several
sessions and every table says which runs it still misses. Run folders go to --out; an interrupted
training run continues from its last checkpoint. A run whose parent model (the stage it starts
from) is missing from --out is trained again with the same config and seed.

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
from typing import Any

import torch

from script_common import cpu_name  # beside this script

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = ROOT / "src" / "semhitok" / "configs" / "mini"
DOCS = ROOT / "docs"
RESULTS = DOCS / "results"
SEMHITOK = [sys.executable, "-m", "semhitok"]


@dataclass
class Run:
    """One `semhitok train` run: ``config`` in configs/mini, started from ``parent``'s model."""

    name: str
    config: str
    steps: int
    parent: str | None = None
    overrides: list[str] = field(default_factory=list)
    probe: bool = False  # score the semantic codes with the linear probe (understanding proxy)


MAIN_STEPS = {"s1": 3000, "s2": 5000, "s3": 2000}
# The stage-2/3 ablations compare among themselves on a shorter schedule than the shipped model's
# (1000 + 500 steps against 5000 + 2000): eight stage-2 runs of 2000 steps would cost over 3 hours
# on 2 cores; at 1000 they fit with the parent in under 2.
ABLATION_STEPS = {"s2": 1000, "s3": 500}


def runs() -> list[Run]:
    s1, s2, s3 = "stage1_semantic.yaml", "stage2_pixel.yaml", "stage3_decoder.yaml"
    a2 = ABLATION_STEPS["s2"]
    out = [
        Run("main-s1", s1, MAIN_STEPS["s1"], probe=True),
        Run("main-s2", s2, MAIN_STEPS["s2"], "main-s1", probe=True),
        Run("main-s3", s3, MAIN_STEPS["s3"], "main-s2"),
        # Tab. 9, semantic VQ: the quantizer and the code dimension of stage 1
        Run("s1-vanilla", s1, MAIN_STEPS["s1"], overrides=["model.semantic_quantizer=vanilla"], probe=True),
        Run("s1-norm", s1, MAIN_STEPS["s1"], overrides=["model.semantic_quantizer=norm"], probe=True),
        Run("s1-dim48", s1, MAIN_STEPS["s1"], overrides=["model.semantic_dim=48"], probe=True),
        Run("s1-dim64", s1, MAIN_STEPS["s1"], overrides=["model.semantic_dim=64"], probe=True),
    ]
    # Tab. 9, sub-codebook size and concat; Tab. 7, semantic codes alone; Tab. 4, pixel-only VQ
    out += [Run(f"s2-m{m}", s2, a2, "main-s1", [f"model.subcodebook_size={m}"]) for m in (4, 8, 12, 16)]
    out += [
        Run("s2-concat-none", s2, a2, "main-s1", ["model.decoder_uses_semantic=false"]),
        Run("s2-concat-length", s2, a2, "main-s1", ["model.decoder_concat=length"]),
        # m = 1: one pixel code per semantic code, so the decoder sees nothing but the semantic code
        Run("s2-semantic-only", s2, a2, "main-s1", ["model.subcodebook_size=1"]),
        # one semantic code and K*m pixel codes: a plain (normalized) VQ tokenizer of the same
        # vocabulary trained for reconstruction only, from the same parts (LlamaGen-style baseline)
        Run("s2-pixel-only", s2, a2, "main-s1", ["model.codebook_size=1", "model.subcodebook_size=8192", "model.decoder_uses_semantic=false"], probe=True),
        Run("s3-m8", s3, ABLATION_STEPS["s3"], "s2-m8"),
    ]
    return out


# ---- training ----------------------------------------------------------------------------------
def train(run: Run, out: Path, data: Path, teacher: Path, by_name: dict[str, Run], quick: bool) -> Path:
    """The run's model folder, training it (and a missing parent) when needed."""
    folder = out / run.name
    if (folder / "model" / "config.json").is_file():
        return folder / "model"
    command = [*SEMHITOK, "train", str(CONFIGS / run.config), "--data", str(data / "images" / "train"), "--out", str(folder), "--quiet"]
    command += ["--max-steps", str(5 if quick else run.steps)]
    if run.parent is not None:
        command += ["--init", str(train(by_name[run.parent], out, data, teacher, by_name, quick))]
    else:
        command.append(f"model.teacher.pretrained_path={teacher}")
    if quick:
        command += ["data.batch_size=8", "run.checkpoint_every=5"]
    command += run.overrides
    if (folder / "checkpoints").is_dir() and any((folder / "checkpoints").glob("step_*")):
        command.append("--resume")
    elif folder.exists():
        shutil.rmtree(folder)
    print("$", " ".join(command[2:] if command[:3] == SEMHITOK else command), flush=True)
    started = time.perf_counter()
    subprocess.run(command, check=True)
    with open(folder / "wall_seconds.txt", "a") as f:  # one line per call (a resumed run has several)
        f.write(f"{time.perf_counter() - started:.1f}\n")
    return folder / "model"


def train_info(folder: Path) -> dict[str, Any]:
    """Steps, images/s, last loss and wall time of a finished run, from its own files."""
    lines = [json.loads(line) for line in (folder / "metrics.jsonl").read_text().splitlines() if line.strip()]
    wall = folder / "wall_seconds.txt"
    return {
        "steps": lines[-1]["step"],
        "last_loss": lines[-1]["loss"],
        "images_per_second": lines[-1].get("images_per_second"),
        "wall_seconds": sum(float(x) for x in wall.read_text().split()) if wall.is_file() else None,
    }


# ---- measuring ---------------------------------------------------------------------------------
@torch.no_grad()
def encode_all(model, images: torch.Tensor, batch: int = 256) -> dict[str, torch.Tensor]:
    """Semantic ids, semantic code vectors z_q, pixel code vectors p_q and teacher features."""
    out: dict[str, list[torch.Tensor]] = {"semantic_ids": [], "pixel_ids": [], "z_q": [], "p_q": [], "teacher": []}
    for start in range(0, len(images), batch):
        x = images[start : start + batch].float() / 255.0
        enc = model.encode(x)
        out["semantic_ids"].append(enc.semantic_ids.flatten(1))
        out["pixel_ids"].append(enc.pixel_ids.flatten(1))
        out["z_q"].append(model.semantic_quantizer.lookup(enc.semantic_ids.flatten(1)))
        out["p_q"].append(model.pixel_quantizer.lookup(enc.semantic_ids.flatten(1), enc.pixel_ids.flatten(1)))
        out["teacher"].append(model.teacher(x))
    return {k: torch.cat(v) for k, v in out.items()}


def probe_scores(train: dict[str, torch.Tensor], test: dict[str, torch.Tensor], key: str, labels: dict[str, tuple[torch.Tensor, torch.Tensor]]) -> dict[str, float]:
    """Linear-probe test accuracy for class and colour, on the flattened token vectors and on their mean."""
    from semhitok.evaluation.probe import linear_probe

    scores = {}
    for pooling in ("tokens", "mean"):
        tr, te = (train[key].flatten(1), test[key].flatten(1)) if pooling == "tokens" else (train[key].mean(1), test[key].mean(1))
        for label, (y_tr, y_te) in labels.items():
            scores[f"{label}_{pooling}"] = linear_probe(tr.float(), y_tr, te.float(), y_te, num_classes=10).test_accuracy
    return scores


@torch.no_grad()
def measure(run: Run, model_dir: Path, data: Path, eval_images: int, probe_images: int, seed: int) -> dict[str, Any]:
    from semhitok import SemHiTok
    from semhitok.data.colour_fashion import load_split
    from semhitok.evaluation.frechet import feature_statistics, frechet_distance
    from semhitok.evaluation.image_metrics import psnr, ssim
    from semhitok.evaluation.judge import Judge, judge_accuracy
    from semhitok.pretrained import pretrained_path

    torch.manual_seed(seed)
    model = SemHiTok.from_pretrained(model_dir).eval()
    test = load_split(data, "test", eval_images)
    result: dict[str, Any] = {"eval_images": len(test.captions)}
    if run.config != "stage1_semantic.yaml":
        originals = test.float_images()
        recons, sem, pix = [], [], []
        for start in range(0, len(originals), 256):
            enc = model.encode(originals[start : start + 256])
            recons.append(model.decode(enc.ids).clamp(0, 1))
            sem.append(enc.semantic_ids)
            pix.append(enc.pixel_ids)
        recon, sem_ids, pix_ids = torch.cat(recons), torch.cat(sem), torch.cat(pix)
        real_f = torch.cat([model.teacher(originals[s : s + 256]).mean(1) for s in range(0, len(originals), 256)])
        fake_f = torch.cat([model.teacher(recon[s : s + 256]).mean(1) for s in range(0, len(recon), 256)])
        pairs = sem_ids.flatten() * model.subcodebook_size + pix_ids.flatten()
        used_parents = torch.unique(sem_ids)
        judge = Judge.from_pretrained(pretrained_path("mini-judge"))
        result.update({
            "psnr_db": float(torch.cat([psnr(recon[i : i + 256], originals[i : i + 256]) for i in range(0, len(recon), 256)]).mean()),
            "ssim": float(torch.cat([ssim(recon[i : i + 256], originals[i : i + 256]) for i in range(0, len(recon), 256)]).mean()),
            "fd_teacher": float(frechet_distance(*feature_statistics(real_f), *feature_statistics(fake_f))),
            "semantic_codes_used": int(used_parents.numel()),
            "subcode_usage": torch.unique(pairs).numel() / (used_parents.numel() * model.subcodebook_size),
            "judge_reconstructions": judge_accuracy(judge, recon, test.labels, test.colours),
        })
    if run.probe:
        train_split = load_split(data, "train", probe_images)
        probe_test = load_split(data, "test", probe_images)
        tr, te = encode_all(model, train_split.images), encode_all(model, probe_test.images)
        labels = {"class": (train_split.labels, probe_test.labels), "colour": (train_split.colours, probe_test.colours)}
        result["semantic_codes_used_probe_set"] = int(torch.unique(te["semantic_ids"]).numel())
        result["probe_z_q"] = probe_scores(tr, te, "z_q", labels)
        if run.name == "main-s1":
            result["probe_teacher"] = probe_scores(tr, te, "teacher", labels)
        if run.name in ("main-s2", "s2-pixel-only"):
            result["probe_p_q"] = probe_scores(tr, te, "p_q", labels)
        if run.name == "main-s2":
            tr["z_p"], te["z_p"] = torch.cat([tr["z_q"], tr["p_q"]], -1), torch.cat([te["z_q"], te["p_q"]], -1)
            result["probe_tokens"] = probe_scores(tr, te, "z_p", labels)
        # the decoupling check compares these ids between stage 1 and stage 2
        result["probe_semantic_ids_sha"] = _digest(te["semantic_ids"])
    return result


def _digest(t: torch.Tensor) -> str:
    import hashlib

    return hashlib.sha256(t.contiguous().numpy().tobytes()).hexdigest()[:16]


# ---- driver ------------------------------------------------------------------------------------
def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", type=Path, required=True, help="a colour Fashion-MNIST build (semhitok data colour-fashion-mnist)")
    ap.add_argument("--out", type=Path, default=Path("runs/results"), help="where the run folders go")
    ap.add_argument("--teacher", type=Path, help="teacher folder (default: the shipped mini-teacher)")
    ap.add_argument("--only", nargs="+", metavar="RUN", help="train and measure only these runs (and their parents)")
    ap.add_argument("--rerun", nargs="+", default=[], metavar="RUN", help="measure these again even if their JSON exists ('all' for every run)")
    ap.add_argument("--eval-images", type=int, default=2000, help="test images for the reconstruction metrics")
    ap.add_argument("--probe-images", type=int, default=5000, help="train and test images for the linear probe")
    ap.add_argument("--quick", action="store_true", help="5 steps per run, results to --out (a smoke test; docs untouched)")
    args = ap.parse_args()
    from semhitok.pretrained import pretrained_path

    teacher = args.teacher or pretrained_path("mini-teacher")
    all_runs = runs()
    by_name = {r.name: r for r in all_runs}
    chosen = [by_name[n] for n in args.only] if args.only else all_runs
    store = (args.out / "measured") if args.quick else (RESULTS / "runs")
    store.mkdir(parents=True, exist_ok=True)
    failed = []
    for run in chosen:
        target = store / f"{run.name}.json"
        if target.is_file() and not ({"all", run.name} & set(args.rerun)):
            continue
        try:
            model_dir = train(run, args.out, args.data, teacher, by_name, args.quick)
        except subprocess.CalledProcessError as exc:
            # One failed run (its error line is above) must not cost the runs after it hours later.
            print(f"{run.name}: training failed (exit {exc.returncode}); going on with the other runs", flush=True)
            failed.append(run.name)
            continue
        metrics = measure(run, model_dir, args.data, 64 if args.quick else args.eval_images, 64 if args.quick else args.probe_images, seed=0)
        record = {"run": run.name, "config": f"configs/mini/{run.config}", "parent": run.parent, "overrides": run.overrides,
                  "train": train_info(model_dir.parent), "metrics": metrics, "cpu": cpu_name()}
        target.write_text(json.dumps(record, indent=2) + "\n")
        print(f"{run.name}: {json.dumps(metrics)[:300]}", flush=True)
    from mini_world_report import write_report  # beside this script

    write_report(store, (args.out / "results.md") if args.quick else (DOCS / "results.md"), args.data, args.out)
    if failed:
        print(f"failed runs: {', '.join(failed)}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    sys.exit(main())
