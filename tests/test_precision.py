"""Precision chosen from the hardware: native-bf16 detection, fp32/bf16/auto, and the warning."""

import json
import warnings

import pytest
import torch

from semhitok import precision
from semhitok.precision import PrecisionWarning, cpu_flags_have_native_bf16, resolve_and_warn, resolve_precision

SAPPHIRE_RAPIDS = "processor\t: 0\nflags\t\t: fpu sse2 avx2 avx512f avx512_bf16 amx_bf16 amx_tile\n"
ICE_LAKE = "processor\t: 0\nflags\t\t: fpu sse2 avx2 avx512f avx512bw avx512_vnni\n"  # AVX-512 but no bf16 dot product
EPYC_ZEN2 = "processor\t: 0\nflags\t\t: fpu sse2 avx2 fma\n"
GRAVITON3 = "processor\t: 0\nFeatures\t: fp asimd sve bf16 i8mm\n"
GRAVITON2 = "processor\t: 0\nFeatures\t: fp asimd asimddp\n"


@pytest.mark.parametrize(
    ("cpuinfo", "machine", "native"),
    [(SAPPHIRE_RAPIDS, "x86_64", True), (ICE_LAKE, "x86_64", False), (EPYC_ZEN2, "x86_64", False),
     (GRAVITON3, "aarch64", True), (GRAVITON2, "aarch64", False), ("", "x86_64", False)],
)
def test_native_bf16_is_read_from_the_cpu_flags(cpuinfo, machine, native):
    assert cpu_flags_have_native_bf16(cpuinfo, machine) is native


@pytest.mark.parametrize("native", [True, False])
def test_fp32_bf16_and_auto_resolve_by_the_hardware(monkeypatch, native):
    monkeypatch.setattr(precision, "cpu_has_native_bf16", lambda: native)
    fp32 = resolve_precision("fp32", "cpu")
    assert (fp32.name, fp32.dtype, fp32.warning) == ("fp32", torch.float32, None)
    auto = resolve_precision("auto", "cpu")
    assert auto.name == ("bf16" if native else "fp32") and auto.warning is None
    bf16 = resolve_precision("bf16", "cpu")
    assert bf16.name == "bf16" and bf16.dtype == torch.bfloat16  # asked for: honoured even where slow
    assert (bf16.warning is None) is native
    if not native:
        assert "slower than fp32" in bf16.warning
    with pytest.raises(ValueError, match="precision must be one of fp32, bf16, auto"):
        resolve_precision("fp16", "cpu")


def test_autocast_follows_the_resolved_precision(monkeypatch):
    monkeypatch.setattr(precision, "cpu_has_native_bf16", lambda: True)
    x = torch.randn(4, 8)
    w = torch.randn(8, 8)
    with resolve_precision("auto", "cpu").autocast("cpu"):
        assert (x @ w).dtype == torch.bfloat16
    with resolve_precision("fp32", "cpu").autocast("cpu"):
        assert (x @ w).dtype == torch.float32


def test_a_slow_choice_warns_once_with_its_source(monkeypatch):
    monkeypatch.setattr(precision, "cpu_has_native_bf16", lambda: False)
    with pytest.warns(PrecisionWarning, match="run.precision: bf16 requested"):
        resolve_and_warn("bf16", "cpu", "run.precision")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        resolve_and_warn("auto", "cpu", "run.precision")  # auto never picks the slow path: no warning


def test_the_command_line_shows_the_warning_as_one_line(monkeypatch, tmp_path, capsys):
    """A library warning of semhitok's own reaches the user as a `semhitok: warning:` line."""
    from semhitok.cli.main import main

    monkeypatch.setattr(precision, "cpu_has_native_bf16", lambda: False)
    image = tmp_path / "a.png"
    from PIL import Image

    Image.new("RGB", (64, 64), (200, 30, 30)).save(image)
    code = main(["encode", str(image), "--preset", "tiny", "-o", str(tmp_path / "t.npz"), "--precision", "bf16"])
    err = capsys.readouterr().err
    assert code == 0, err
    lines = [line for line in err.splitlines() if "bf16" in line]
    assert lines == [f"semhitok: warning: --precision: {resolve_precision('bf16', 'cpu').warning}"]
