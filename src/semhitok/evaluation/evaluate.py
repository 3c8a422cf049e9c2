"""The fixed evaluation protocol: reconstruction quality, Fréchet distance, codebook usage.

Protocol (written into every report): images are read from the dataset and decoded by
:func:`semhitok.image_io.decode_image` (EXIF orientation applied, transparency on white),
resized by :func:`semhitok.modeling.fit_to_size` so the shorter side equals the model's image size
(bicubic, antialiased; no interpolation when it already does) and centre-cropped -- the pixels
``semhitok encode`` and training see; the first ``max_images`` in the dataset's order are used. Originals and reconstructions are both [0, 1]
images of the model's size; the Fréchet distance compares the feature statistics of the
reconstructions against those of the originals (the reference statistics are cached per
dataset, protocol and extractor).
"""

from __future__ import annotations

import time
from itertools import islice
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from torch.utils.data import DataLoader, IterableDataset, Subset

from .. import distributed
from ..precision import resolve_and_warn
from ..data import TransformConfig, build_dataset, collate_samples
from .codebook_stats import CodebookUsage
from .fid_features import Extractor, dataset_identity, load_reference, reference_key, save_reference
from .frechet import FeatureStats, frechet_distance
from .image_metrics import ReconstructionMeter, bits_per_image


def evaluate(
    model: Any,
    data_path: str,
    *,
    extractor: Extractor,
    lpips: Any | None = None,
    lpips_label: str | None = None,
    max_images: int = 50000,
    batch_size: int = 16,
    cache_dir: str | Path | None = None,
    precision: str = "fp32",
    progress: Any | None = None,
    bad_files_log: str | Path | None = None,
) -> tuple[dict[str, Any], CodebookUsage]:
    """Run the protocol; returns the report (a JSON-ready dict) and the raw code counts.

    ``precision``: ``fp32``, ``bf16`` (autocast; warns where the hardware lacks native bf16) or
    ``auto`` (:mod:`semhitok.precision`); the report records what ran. ``bad_files_log``: a file
    listing every skipped undecodable image (else DEBUG log records).
    """
    device = next(model.parameters()).device
    dataset = build_dataset(data_path, TransformConfig(image_size=model.image_size, crop="center"), bad_files_log=bad_files_log)
    protocol = eval_protocol(model.image_size, max_images)
    rank, world = distributed.rank(), distributed.world_size()
    limit = max_images
    if world > 1:
        # Under torchrun each rank takes every world-th image of the first max_images (webdataset
        # shards split themselves over ranks); the statistics are merged at the end.
        if isinstance(dataset, IterableDataset):
            limit = -(-max_images // world)
        else:
            dataset = Subset(dataset, list(range(rank, min(len(dataset), max_images), world)))
            limit = len(dataset)
    loader = DataLoader(dataset, batch_size=batch_size, collate_fn=collate_samples)
    batches = -(-limit // batch_size)
    extractor.module.to(device).eval()

    key = reference_key(dataset_identity(data_path), protocol, extractor)
    cache = Path(cache_dir) if cache_dir is not None else None
    cached = load_reference(cache, key) if cache is not None else None
    real, fake = FeatureStats(), FeatureStats()
    meter = ReconstructionMeter(lpips=lpips)
    usage = CodebookUsage(model.codebook_size, model.subcodebook_size)
    resolved = resolve_and_warn(precision, device, "precision")
    autocast = resolved.autocast(device)
    seen, started = 0, time.perf_counter()
    with torch.no_grad():
        for batch in islice(loader, batches):
            images = batch.images[: limit - seen].to(device)
            with autocast:
                enc = model.encode(images)
                recon = model.decode(enc.ids).float()
            meter.update(images, recon)
            usage.update(enc.semantic_ids, enc.pixel_ids)
            fake.update(extractor.module(recon))
            if cached is None:
                real.update(extractor.module(images))
            seen += images.shape[0]
            if progress is not None:
                progress.update(1)
    if world > 1:
        # Plain data only (CPU feature statistics, metric sums, counts): no module is pickled.
        mine = (FeatureStats(device="cpu").merge(fake), FeatureStats(device="cpu").merge(real), dict(meter.sums), meter.num_images, meter.psnr_infinite, usage.pair_counts.cpu(), seen)
        everything: list[Any] = [None] * world
        dist.all_gather_object(everything, mine)
        fake, real, meter, seen = FeatureStats(device="cpu"), FeatureStats(device="cpu"), ReconstructionMeter(lpips=lpips), 0
        usage = CodebookUsage(model.codebook_size, model.subcodebook_size)
        for fake_r, real_r, sums_r, images_r, infinite_r, pairs_r, seen_r in everything:
            fake.merge(fake_r)
            real.merge(real_r)
            other = ReconstructionMeter(lpips=lpips)
            other.sums, other.num_images, other.psnr_infinite = sums_r, images_r, infinite_r
            meter.merge(other)
            usage.pair_counts += pairs_r
            seen += seen_r
    if seen < 2:
        raise ValueError(f"{data_path}: {seen} image(s) read; the Fréchet distance needs at least 2")
    if cached is None:
        mu_r, sigma_r = real.mean_cov()
        if cache is not None and rank == 0:
            save_reference(cache, key, mu_r.cpu(), sigma_r.cpu(), {"data": str(data_path), "protocol": protocol, "extractor": extractor.identity, "images": seen})
    else:
        mu_r, sigma_r = cached
    mu_f, sigma_f = fake.mean_cov()
    quality = meter.compute()
    stats = usage.compute(top_n=16)
    tokens = model.grid_size**2
    report = {
        "model": {"fingerprint": model.fingerprint(), "image_size": model.image_size, "grid": [model.grid_size, model.grid_size],
                  "codebook_size": model.codebook_size, "subcodebook_size": model.subcodebook_size, "vocab_size": model.vocab_size},
        "data": str(data_path),
        "protocol": protocol,
        "images": seen,
        "precision": resolved.name,
        "frechet": {"value": frechet_distance(mu_r, sigma_r, mu_f, sigma_f), "label": extractor.label, "is_rfid": extractor.is_rfid,
                    "reference_cached": cached is not None, "reference_key": key},
        "psnr": quality["psnr"], "ssim": quality["ssim"], "lpips": {
            "value": quality.get("lpips"), "label": lpips_label or "not computed (give --lpips-weights VGG16 file)",
        },
        "bits_per_image": bits_per_image(tokens, model.vocab_size),
        "codebook": stats,
        "seconds": time.perf_counter() - started,
    }
    return report, usage


def eval_protocol(image_size: int, max_images: int) -> dict[str, Any]:
    """What :func:`evaluate` does to the images, for the report and the reference-cache key.

    The ``preprocessing`` version changes whenever the pixels change (version 2: one bicubic
    path for training and evaluation, EXIF applied to tar members too), so reference statistics
    cached under an older protocol are not reused.
    """
    return {
        "image_size": image_size,
        "decode": "semhitok.image_io.decode_image: EXIF orientation applied, alpha over white, 16-bit scaled by 65535",
        "resize": "shorter side to image_size, torch bicubic antialiased (none when already that size), clamped to [0, 1]",
        "crop": "center",
        "max_images": max_images,
        "preprocessing": 2,
    }


def report_rows(report: dict[str, Any]) -> list[tuple[str, str]]:
    """(metric, value) rows of a report, shared by the Markdown and HTML pages."""
    f, cb, lp = report["frechet"], report["codebook"], report["lpips"]
    return [
        (f["label"], f"{f['value']:.4f}"),
        ("PSNR (dB)", f"{report['psnr']:.3f}"),
        ("SSIM", f"{report['ssim']:.4f}"),
        ("LPIPS", f"{lp['value']:.4f}" if lp["value"] is not None else lp["label"]),
        ("bits per image", f"{report['bits_per_image']:.0f}"),
        ("semantic codes used", f"{cb['semantic_used']} of {cb['codebook_size']} ({100 * cb['semantic_usage']:.1f}%)"),
        ("semantic perplexity", f"{cb['semantic_perplexity']:.1f}"),
        ("sub-code usage (mean over used codes)", f"{100 * cb['subcodebook_usage']:.1f}%"),
        ("dead sub-codes among used codes", str(cb["dead_subcodes"])),
    ]


def report_markdown(report: dict[str, Any]) -> str:
    """The report as a Markdown page."""
    model = report["model"]
    lines = [
        "# SemHiTok evaluation", "",
        f"Model fingerprint `{model['fingerprint']}`, {model['image_size']} px, "
        f"{model['grid'][0]}x{model['grid'][1]} tokens, K={model['codebook_size']}, m={model['subcodebook_size']}.",
        f"Data `{report['data']}`: {report['images']} images; protocol: {report['protocol']}.", "",
        "| metric | value |", "|---|---|",
        *(f"| {metric} | {value} |" for metric, value in report_rows(report)), "",
    ]
    if not report["frechet"]["is_rfid"]:
        lines.append("The Fréchet distance above is **not rFID**: it was not computed with the FID Inception weights (give `--fid-weights`).")
    return "\n".join(lines) + "\n"
