"""Feature extractors for the Fréchet distance, and the cache of reference statistics.

Only features from the real FID Inception weights give a number that may be called rFID. Any
other extractor gives a Fréchet distance *in that extractor's feature space*, labelled as such.
"""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors.torch import save_file
from torch import Tensor, nn

logger = logging.getLogger("semhitok.evaluation")

# Stand-ins when the FID Inception weights are absent. A random-init InceptionV3 is not offered:
# its pool3 features vanish (~1e-8 after 90 layers of default init), so every distance is ~0.
EXTRACTORS = ("teacher",)


@dataclass
class Extractor:
    """A feature extractor with the name a report must show."""

    module: nn.Module
    label: str  # e.g. "rFID (InceptionV3, FID weights)" or "FD (random-init InceptionV3, seed 0) - not rFID"
    identity: str  # what the cache key hashes: the weights file digest or the extractor name
    is_rfid: bool


class _TeacherPool(nn.Module):
    """The tokenizer's frozen teacher, mean-pooled over tokens: (B, 3, S, S) -> (B, D)."""

    def __init__(self, teacher: nn.Module) -> None:
        super().__init__()
        self.teacher = teacher

    @torch.no_grad()
    def forward(self, images: Tensor) -> Tensor:
        return self.teacher(images).float().mean(dim=1)


def file_digest(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()[:16]


def module_digest(module: nn.Module) -> str:
    """Digest of a module's weights: the cache must not mix two teachers' feature spaces."""
    h = hashlib.sha256()
    for name, tensor in sorted(module.state_dict().items()):
        h.update(name.encode())
        h.update(tensor.detach().float().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()[:16]


def build_extractor(fid_weights: str | None, name: str, tokenizer: nn.Module) -> Extractor:
    """The real FID Inception when ``fid_weights`` is given, else the named stand-in."""
    from .inception import load_fid_inception_weights

    if fid_weights:
        model = load_fid_inception_weights(fid_weights)
        return Extractor(model, "rFID (InceptionV3 pool3, FID weights pt_inception-2015-12-05)", f"fid-inception:{file_digest(fid_weights)}", True)
    if name == "teacher":
        return Extractor(_TeacherPool(tokenizer.teacher), "FD in the tokenizer's own teacher feature space (mean-pooled) - NOT rFID", f"teacher:{module_digest(tokenizer.teacher)}", False)
    raise ValueError(f"unknown feature extractor {name!r}; choose one of {', '.join(EXTRACTORS)}")


def reference_key(dataset_id: str, protocol: dict, extractor: Extractor) -> str:
    """Cache key of the reference statistics: dataset, protocol and extractor together."""
    payload = json.dumps({"data": dataset_id, "protocol": protocol, "extractor": extractor.identity}, sort_keys=True)
    return hashlib.sha256(payload.encode()).hexdigest()[:24]


def load_reference(cache_dir: Path, key: str) -> tuple[Tensor, Tensor] | None:
    """The cached reference statistics ``(mu (D,), sigma (D, D))``, or None when there are none.

    A cache file that cannot be used (truncated by a full disk, damaged, wrong keys or shapes,
    NaN/Inf) is named in a warning on the ``semhitok.evaluation`` logger and treated as absent: the
    statistics are recomputed and :func:`save_reference` replaces the file.
    """
    from ..weights_file import WeightsFileError, read_weights_file

    path = cache_dir / f"{key}.safetensors"
    if not path.exists():
        return None
    try:
        tensors = read_weights_file(path, what="reference statistics cache file", check_finite=True)
        mu, sigma = tensors["mu"], tensors["sigma"]
    except WeightsFileError as exc:
        logger.warning("%s; recomputing it", exc)
        return None
    except KeyError:
        logger.warning("reference statistics cache file %s lacks mu or sigma; recomputing it", path)
        return None
    if mu.ndim != 1 or tuple(sigma.shape) != (mu.shape[0], mu.shape[0]):
        logger.warning("reference statistics cache file %s holds mu %s and sigma %s, not (D,) and (D, D); recomputing it", path, tuple(mu.shape), tuple(sigma.shape))
        return None
    return mu, sigma


def save_reference(cache_dir: Path, key: str, mu: Tensor, sigma: Tensor, description: dict) -> Path | None:
    """Write the reference statistics atomically (a reader never sees half a file).

    The cache only saves time: a cache folder that cannot be written (read-only, full) is a
    warning on the ``semhitok.evaluation`` logger, not a failed evaluation. Returns the file, or
    None when it could not be written.
    """
    from ..atomic import AtomicFile, OutputError

    path = cache_dir / f"{key}.safetensors"
    try:
        with AtomicFile(path) as out:
            with out.writing() as tmp:
                save_file({"mu": mu.contiguous(), "sigma": sigma.contiguous()}, str(tmp), metadata={"description": json.dumps(description)})
            out.commit()
    except OutputError as exc:
        logger.warning("%s; the reference statistics are not cached", exc)
        return None
    return path


def dataset_identity(path: str) -> str:
    """What identifies the data for the cache: the resolved path plus the names, sizes and
    modification times of its files (a changed file invalidates the cached statistics)."""
    p = Path(path)
    if p.is_dir():
        files = sorted(f for f in p.rglob("*") if f.is_file())
        listing = [(str(f.relative_to(p)), f.stat().st_size, int(f.stat().st_mtime)) for f in files]
        return hashlib.sha256(json.dumps([str(p.resolve()), listing]).encode()).hexdigest()[:24]
    return hashlib.sha256(str(path).encode()).hexdigest()[:24]
