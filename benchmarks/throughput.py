"""Tokenizer throughput against the hardware's own limit, measured in one run.

For each preset (tiny, mini, paper-256) and batch size:

- **encode** and **decode** images/s (median over ``--repeats`` timed calls after a warm-up);
- **FLOPs per image**, counted by ``torch.utils.flop_counter.FlopCounterMode`` on one call
  (matmuls, convolutions and attention; element-wise work is not counted, as in every MFU figure);
- **achieved FLOP/s** = FLOPs per image x images/s, and **MFU** = achieved / the dense matmul peak
  of the same dtype, measured in this run on this machine (best of a few large square matmuls), so
  the ratio holds on a shared, noisy machine and across CPUs;

in fp32 and under bf16 autocast (the codebook searches stay fp32 either way). Then, for the
pipeline: ``semhitok tokenize``'s own work loop (JPEG decode + resize in DataLoader workers, batched
encode, shard writing) on a folder of JPEGs, against pure encode of the same, already decoded
images at the same batch size: the pipeline's share of pure-encode throughput (target >= 80 %: data
loading hidden behind the encoder).

Models have random weights (speed does not depend on the values); ``mini`` is the shipped
mini-semhitok when present. Usage::

    python benchmarks/throughput.py --json results.json          # ~6 min on 2 CPU cores
    python benchmarks/throughput.py --presets tiny mini --repeats 3
    python benchmarks/throughput.py --device cuda --batch-sizes 64 --presets paper-256
    SEMHITOK_BENCH_TOY=1 python benchmarks/throughput.py         # seconds: a smoke test

See benchmarks/BENCHMARKS.md for the recorded numbers, the machine and the command.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
from argparse import Namespace
from collections.abc import Callable
from pathlib import Path

import torch

import measure
from measure import count_flops, matmul_peak, sync
from semhitok import SemHiTok, SemHiTokConfig
from semhitok.precision import native_bf16, resolve_precision

TOY = os.environ.get("SEMHITOK_BENCH_TOY", "") not in ("", "0")
ASSETS = Path(__file__).resolve().parents[1] / "src" / "semhitok" / "assets" / "photos"
DEFAULT_BATCHES = {"tiny": [1, 16, 64], "mini": [1, 16, 64, 256], "paper-256": [1, 4, 8], "paper-384": [1, 4]}


# ---- machine --------------------------------------------------------------------------------------
def machine_info(device: torch.device) -> dict:
    return measure.machine_info(device, native_bf16=native_bf16(device))


# ---- models -------------------------------------------------------------------------------------
def build_model(preset: str, device: torch.device) -> tuple[SemHiTok, str]:
    """A model of the preset (random weights, or the shipped mini-semhitok), in eval mode."""
    from semhitok.pretrained import available, pretrained_path

    if preset == "mini" and "mini-semhitok" in available():
        return SemHiTok.from_pretrained(pretrained_path("mini-semhitok")).to(device).eval(), "shipped mini-semhitok"
    torch.manual_seed(0)
    return SemHiTok(SemHiTokConfig.from_preset(preset)).to(device).eval(), "random weights"


def time_calls(fn: Callable[[], object], device: torch.device, warmup: int, repeats: int) -> list[float]:
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        sync(device)
        t = time.perf_counter()
        fn()
        sync(device)
        times.append(time.perf_counter() - t)
    return times


def bench_model(model: SemHiTok, batches: list[int], precisions: list[str], peaks: dict[str, float], device: torch.device, args: Namespace, log) -> list[dict]:
    rows = []
    s = model.image_size
    for batch in batches:
        images = torch.rand(batch, 3, s, s, device=device)
        with torch.inference_mode():
            ids = model.encode(images).ids
        for name in precisions:
            precision = resolve_precision(name, device)
            encode = _under(precision, device, lambda: model.encode(images))
            decode = _under(precision, device, lambda: model.decode(ids))
            row = {"batch": batch, "precision": name}
            for what, fn in (("encode", encode), ("decode", decode)):
                flops = count_flops(fn) / batch
                times = time_calls(fn, device, args.warmup, args.repeats)
                ips = batch / statistics.median(times)
                achieved = flops * ips
                row[what] = {
                    "images_per_s": ips, "flops_per_image": flops, "achieved_flops": achieved,
                    "mfu": achieved / peaks[name], "median_s": statistics.median(times), "min_s": min(times),
                }
            log(f"  batch {batch:4d} {name}: encode {row['encode']['images_per_s']:9.1f} img/s "
                f"({row['encode']['achieved_flops'] / 1e9:7.1f} GFLOP/s, MFU {row['encode']['mfu']:.1%}); "
                f"decode {row['decode']['images_per_s']:9.1f} img/s (MFU {row['decode']['mfu']:.1%})")
            rows.append(row)
    return rows


def _under(precision, device: torch.device, fn: Callable[[], object]) -> Callable[[], object]:
    def call() -> object:
        with torch.inference_mode(), precision.autocast(device):
            return fn()

    return call


# ---- the tokenize pipeline ------------------------------------------------------------------------
def write_jpegs(folder: Path, n: int, size: int, seed: int = 0) -> None:
    """``n`` JPEGs of about ``size`` px: random crops of the shipped photos (real JPEG content,
    so decoding costs what it costs on a real corpus), each a little larger than the model's input
    so that the resize runs too."""
    from PIL import Image

    photos = sorted(p for p in ASSETS.iterdir() if p.suffix.lower() in (".jpg", ".jpeg", ".png"))
    g = torch.Generator().manual_seed(seed)
    folder.mkdir(parents=True)
    sources = [Image.open(p).convert("RGB") for p in photos]
    for i in range(n):
        src = sources[i % len(sources)]
        side = min(src.size)
        crop = int(side * (0.5 + 0.5 * float(torch.rand((), generator=g))))
        x = int(torch.randint(0, src.size[0] - crop + 1, (), generator=g))
        y = int(torch.randint(0, src.size[1] - crop + 1, (), generator=g))
        out = size * 5 // 4
        src.crop((x, y, x + crop, y + crop)).resize((out, out), Image.BICUBIC).save(folder / f"{i:06d}.jpg", quality=90)
        (folder / f"{i:06d}.txt").write_text("a photo")


def bench_pipeline(model: SemHiTok, n: int, batch: int, workers_list: list[int], precision_name: str, device: torch.device, log) -> dict:
    """img/s of tokenize's work loop (decode, resize, encode, write) vs encode of decoded tensors."""
    import semhitok.cli.tokenize as tokenize_cmd
    from semhitok.data.work_units import UnitBatches, plan_work_units

    precision = resolve_precision(precision_name, device)
    root = Path(tempfile.mkdtemp(prefix="semhitok-bench-"))
    try:
        write_jpegs(root / "jpegs", n, model.image_size)
        units, _ = plan_work_units([str(root / "jpegs")], shard_size=max(batch, n // 4))
        # Pure encode: the same images, decoded and resized beforehand, in the same batches.
        decoded = [b.images for b in UnitBatches(units, model.image_size, batch) if b.keys]
        encode = _under(precision, device, lambda: [model.encode(x.to(device)) for x in decoded])
        encode()  # warm-up
        sync(device)
        t = time.perf_counter()
        encode()
        sync(device)
        pure = n / (time.perf_counter() - t)
        result = {"images": n, "batch": batch, "precision": precision_name, "pure_encode_images_per_s": pure, "pipeline": []}
        for workers in workers_list:
            out = root / f"tokens-w{workers}"
            args = Namespace(batch_size=batch, workers=workers)
            t = time.perf_counter()
            tokenize_cmd._tokenize_units(model, units, out, model.fingerprint(), precision, args, show_progress=False)
            seconds = time.perf_counter() - t
            ips = n / seconds
            result["pipeline"].append({"workers": workers, "images_per_s": ips, "share_of_pure_encode": ips / pure, "seconds": seconds})
            log(f"  tokenize, {workers} worker(s): {ips:8.1f} img/s = {ips / pure:.0%} of pure encode ({pure:.1f} img/s)")
        return result
    finally:
        shutil.rmtree(root, ignore_errors=True)


# ---- report -------------------------------------------------------------------------------------
def markdown(res: dict) -> str:
    m = res["machine"]
    lines = [
        f"Machine: {m['cpu']}, {m['cpu_count']} CPUs, {m['torch_threads']} torch threads, torch {m['torch']} "
        f"(CPU capability {m['cpu_capability']}), native bf16: {m['native_bf16']}, device {m['device']}"
        + (f" ({m['gpu']})" if "gpu" in m else ""),
        "",
        "Matmul peak (best of square matmuls, this run): "
        + ", ".join(f"{k} {v / 1e9:.1f} GFLOP/s" for k, v in res["matmul_peak_flops"].items()),
        "",
        "| preset | weights | batch | precision | encode img/s | encode GFLOP/img | encode GFLOP/s | encode MFU | decode img/s | decode GFLOP/img | decode MFU |",
        "|---|---|---:|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for preset, entry in res["presets"].items():
        for r in entry["rows"]:
            e, d = r["encode"], r["decode"]
            lines.append(
                f"| {preset} | {entry['weights']} | {r['batch']} | {r['precision']} | {e['images_per_s']:.1f} | {e['flops_per_image'] / 1e9:.3f} | "
                f"{e['achieved_flops'] / 1e9:.1f} | {e['mfu']:.1%} | {d['images_per_s']:.1f} | {d['flops_per_image'] / 1e9:.3f} | {d['mfu']:.1%} |"
            )
    if res.get("pipeline"):
        lines += ["", "| preset | images | batch | precision | workers | tokenize img/s | pure encode img/s | share |", "|---|---:|---:|---|---:|---:|---:|---:|"]
        for preset, p in res["pipeline"].items():
            for w in p["pipeline"]:
                lines.append(
                    f"| {preset} | {p['images']} | {p['batch']} | {p['precision']} | {w['workers']} | {w['images_per_s']:.1f} | "
                    f"{p['pure_encode_images_per_s']:.1f} | {w['share_of_pure_encode']:.0%} |"
                )
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--presets", nargs="*", default=["tiny", "mini", "paper-256"], help="presets to measure (default tiny mini paper-256)")
    ap.add_argument("--batch-sizes", nargs="+", type=int, help="batch sizes for every preset (default: per preset, see DEFAULT_BATCHES)")
    ap.add_argument("--precisions", nargs="+", default=["fp32", "bf16"], choices=["fp32", "bf16"], help="default: both")
    ap.add_argument("--repeats", type=int, default=3, help="timed calls per configuration (default 3)")
    ap.add_argument("--warmup", type=int, default=1, help="untimed calls first (default 1)")
    ap.add_argument("--device", default="cpu", help="cpu (default) or cuda")
    ap.add_argument("--compile", action="store_true", help="torch.compile the encoder and decoder first")
    ap.add_argument("--pipeline-presets", nargs="*", default=["tiny", "mini", "paper-256"], help="presets for the tokenize-vs-encode comparison")
    ap.add_argument("--pipeline-images", type=int, default=4096, help="JPEGs for the tokenize comparison (paper presets: 1/128 of it); enough that worker start-up does not count")
    ap.add_argument("--pipeline-workers", nargs="+", type=int, default=[0, 1, 2], help="DataLoader workers to try (default 0 1 2)")
    ap.add_argument("--json", type=Path, help="write every measurement here")
    ap.add_argument("--markdown", type=Path, help="write the tables here")
    args = ap.parse_args(argv)
    device = torch.device(args.device)
    if TOY:
        args.presets, args.pipeline_presets, args.pipeline_images, args.repeats = ["tiny"], ["tiny"], 16, 1

    def log(msg: str) -> None:
        print(msg, flush=True)

    started = time.perf_counter()
    res: dict = {"machine": machine_info(device), "args": {k: str(v) for k, v in vars(args).items()}, "presets": {}, "pipeline": {}}
    log(f"machine: {res['machine']}")
    dtypes = {"fp32": torch.float32, "bf16": torch.bfloat16}
    res["matmul_peak_flops"] = {p: matmul_peak(dtypes[p], device, args.repeats, toy=TOY) for p in args.precisions}
    log("matmul peak: " + ", ".join(f"{k} {v / 1e9:.1f} GFLOP/s" for k, v in res["matmul_peak_flops"].items()))
    for preset in dict.fromkeys(args.presets + args.pipeline_presets):
        model, weights = build_model(preset, device)
        if args.compile:
            model.encode = torch.compile(model.encode)  # type: ignore[method-assign]
            model.decode = torch.compile(model.decode)  # type: ignore[method-assign]
        if preset in args.presets:
            log(f"{preset} ({weights}, {model.image_size} px, {model.grid_size}x{model.grid_size} tokens):")
            batches = args.batch_sizes or ([1, 4] if TOY else DEFAULT_BATCHES[preset])
            res["presets"][preset] = {"weights": weights, "rows": bench_model(model, batches, args.precisions, res["matmul_peak_flops"], device, args, log)}
        if preset in args.pipeline_presets:
            paper = preset.startswith("paper")
            n = max(8, args.pipeline_images // 128) if paper else args.pipeline_images
            batch = 8 if paper else 64
            log(f"{preset}: tokenize pipeline on {n} JPEGs, batch {batch}")
            res["pipeline"][preset] = bench_pipeline(model, n, min(batch, n), args.pipeline_workers, "fp32", device, log)
        del model
    res["seconds"] = time.perf_counter() - started
    table = markdown(res)
    print(table)
    if args.json:
        args.json.write_text(json.dumps(res, indent=2) + "\n")
    if args.markdown:
        args.markdown.write_text(table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
