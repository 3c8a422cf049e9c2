"""Which floating-point precision to run in, chosen from what the hardware does fast.

bf16 autocast is a win only where the hardware has native bf16 arithmetic: GPUs from Ampere on,
and CPUs with AVX512_BF16 or AMX (x86) or the BF16 extension (Arm). On a CPU without it, PyTorch
emulates bf16 matmuls and they run several times *slower* than fp32 (an AVX2-only EPYC encoded
the paper-256 tokenizer at 45 GFLOP/s in fp32 and 10 GFLOP/s under bf16 autocast), so bf16 must
never be picked blindly. Every command that runs the tokenizer takes one of

- ``fp32``: always fp32 (the default: the same ids and numbers on every machine);
- ``bf16``: bf16 autocast, with a warning where the hardware lacks native bf16;
- ``auto``: bf16 where the hardware has it natively, else fp32.

Codebook searches run in fp32 whatever is chosen here (the quantizers turn autocast off), so the
token ids depend on precision only through the encoder's features.
"""

from __future__ import annotations

import contextlib
import functools
import platform
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import ContextManager, Literal

import torch

PRECISIONS = ("fp32", "bf16", "auto")
Precision = Literal["fp32", "bf16", "auto"]

# /proc/cpuinfo flags of native bf16 dot products: x86 (AVX512_BF16, AMX-BF16), Arm (FEAT_BF16).
_X86_BF16_FLAGS = frozenset({"avx512_bf16", "amx_bf16"})
_ARM_BF16_FEATURES = frozenset({"bf16"})


class PrecisionWarning(RuntimeWarning):
    """A precision was asked for that this hardware runs slowly (bf16 without native support)."""


@dataclass(frozen=True)
class ResolvedPrecision:
    """What a requested precision became on one device.

    Attributes:
        name: ``"fp32"`` or ``"bf16"``, what actually runs.
        requested: what was asked for (``fp32``, ``bf16`` or ``auto``).
        native_bf16: whether the device has native bf16 arithmetic.
        warning: one sentence for the user when the choice is likely slow, else None.
    """

    name: Literal["fp32", "bf16"]
    requested: str
    native_bf16: bool
    warning: str | None = None

    @property
    def dtype(self) -> torch.dtype:
        return torch.bfloat16 if self.name == "bf16" else torch.float32

    def autocast(self, device: torch.device | str) -> ContextManager[object]:
        """``torch.autocast`` to bf16 when resolved to bf16, else a no-op context."""
        if self.name == "fp32":
            return contextlib.nullcontext()
        return torch.autocast(torch.device(device).type, dtype=torch.bfloat16)


def cpu_flags_have_native_bf16(cpuinfo: str, machine: str) -> bool:
    """Whether a ``/proc/cpuinfo`` text lists native bf16 for this ``platform.machine()``."""
    words: set[str] = set()
    for line in cpuinfo.splitlines():
        key, _, value = line.partition(":")
        if key.strip().lower() in ("flags", "features"):
            words.update(value.split())
    if machine.lower() in ("aarch64", "arm64"):
        return bool(words & _ARM_BF16_FEATURES)
    return bool(words & _X86_BF16_FLAGS)


@functools.lru_cache(maxsize=1)
def cpu_has_native_bf16() -> bool:
    """Native bf16 on this machine's CPU. Read from ``/proc/cpuinfo`` (Linux); elsewhere the answer
    is unknown and taken as no, which at worst leaves a fast path unused (never a slow one taken)."""
    try:
        cpuinfo = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return cpu_flags_have_native_bf16(cpuinfo, platform.machine())


def native_bf16(device: torch.device | str) -> bool:
    """Whether ``device`` does bf16 arithmetic natively (CUDA: compute capability 8.0 or newer)."""
    device = torch.device(device)
    if device.type == "cuda":
        return torch.cuda.is_available() and torch.cuda.is_bf16_supported(including_emulation=False)
    if device.type == "cpu":
        return cpu_has_native_bf16()
    return False


def resolve_precision(requested: str, device: torch.device | str) -> ResolvedPrecision:
    """Turn ``fp32`` / ``bf16`` / ``auto`` into what runs on ``device`` (see the module docstring)."""
    if requested not in PRECISIONS:
        raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}, got {requested!r}")
    device = torch.device(device)
    native = native_bf16(device)
    if requested == "fp32":
        return ResolvedPrecision("fp32", requested, native)
    if requested == "auto":
        return ResolvedPrecision("bf16" if native else "fp32", requested, native)
    warning = None
    if not native:
        what = "this CPU has neither AVX512_BF16 nor AMX nor Arm BF16" if device.type == "cpu" else f"{device} has no native bf16"
        warning = f"bf16 requested but {what}: bf16 autocast is emulated there and usually several times slower than fp32 (use fp32 or auto)"
    return ResolvedPrecision("bf16", requested, native, warning)


def resolve_and_warn(requested: str, device: torch.device | str, what: str = "precision") -> ResolvedPrecision:
    """:func:`resolve_precision`, raising its warning (if any) as a :class:`PrecisionWarning`
    that names ``what`` (the option or config key the value came from)."""
    resolved = resolve_precision(requested, device)
    if resolved.warning:
        warnings.warn(f"{what}: {resolved.warning}", PrecisionWarning, stacklevel=2)
    return resolved
