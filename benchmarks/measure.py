"""What every benchmark here measures the same way: the machine it ran on, peak memory, the
matmul peak that MFU is quoted against, and FLOPs.

Imported by the scripts in this folder (run as ``python benchmarks/NAME.py``, so this folder is on
``sys.path``).
"""

from __future__ import annotations

import gc
import os
import platform
import threading
import time
from pathlib import Path

import torch
from torch.utils.flop_counter import FlopCounterMode


def cpu_model() -> str:
    """The CPU's model name from /proc/cpuinfo (every benchmark names its CPU: AVX2-only and
    AVX-512/AMX machines differ by several times in bf16)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine_info(device: torch.device | None = None, **extra) -> dict:
    """CPU, thread count, torch and Python versions (and the GPU on CUDA), plus ``extra``."""
    info = {"cpu": cpu_model(), "cpu_count": os.cpu_count(), "torch_threads": torch.get_num_threads(), "torch": torch.__version__,
            "cpu_capability": torch.backends.cpu.get_cpu_capability(), "python": platform.python_version()}
    if device is not None:
        info["device"] = str(device)
        if device.type == "cuda":
            info["gpu"] = torch.cuda.get_device_name(device)
    return {**info, **extra}


def sync(device: torch.device) -> None:
    """Wait for the device (a no-op on CPU), so a timer around a call measures the call."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def matmul_peak(dtype: torch.dtype, device: torch.device, repeats: int = 5, toy: bool = False) -> float:
    """Best FLOP/s of an n x n x n matmul in ``dtype`` over ``max(3, repeats)`` tries (n = 2048 on
    CPU, 8192 on GPU, 256 for ``toy`` smoke tests): the peak every MFU here is quoted against."""
    n = 256 if toy else (8192 if device.type == "cuda" else 2048)
    a = torch.randn(n, n, device=device, dtype=dtype)
    b = torch.randn(n, n, device=device, dtype=dtype)
    torch.mm(a, b)
    best = float("inf")
    for _ in range(max(3, repeats)):
        sync(device)
        t = time.perf_counter()
        torch.mm(a, b)
        sync(device)
        best = min(best, time.perf_counter() - t)
    return 2 * n**3 / best


def count_flops(fn) -> int:
    """FLOPs of one call of ``fn`` (``torch.utils.flop_counter``: the matmuls and convolutions)."""
    with FlopCounterMode(display=False) as counter:
        fn()
    return int(counter.get_total_flops())


def _status_kib(field: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise RuntimeError(f"{field} not in /proc/self/status")


def _reset_hwm() -> bool:
    """Reset the kernel's peak-RSS counter (VmHWM) to the current RSS; False if not allowed."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


class PeakRSS:
    """Peak RSS increase over a block, two ways.

    ``hwm``: the kernel's own high-water mark VmHWM, reset on entry through /proc/self/clear_refs
    (exact, nothing missed). ``sampled``: a background thread reading VmRSS every 1 ms (a fallback
    and a cross-check; it can miss peaks shorter than a millisecond). Both in bytes, relative to
    the RSS on entry.
    """

    def __enter__(self) -> PeakRSS:
        gc.collect()
        self.base = _status_kib("VmRSS")
        self.hwm_ok = _reset_hwm()
        self._max = self.base
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()
        return self

    def _sample(self) -> None:
        while not self._stop.is_set():
            self._max = max(self._max, _status_kib("VmRSS"))
            time.sleep(0.001)

    def __exit__(self, *exc) -> None:
        self._max = max(self._max, _status_kib("VmRSS"))
        self._stop.set()
        self._thread.join()
        self.sampled = (self._max - self.base) * 1024
        self.hwm = (_status_kib("VmHWM") - self.base) * 1024 if self.hwm_ok else None

    @property
    def peak(self) -> int:
        # Both are lower bounds of the true peak (the sampler can miss a short peak; RSS counters
        # are updated lazily by the kernel); the larger one is reported.
        return max(self.sampled, self.hwm if self.hwm is not None else 0)
