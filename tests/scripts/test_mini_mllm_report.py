"""scripts/mini_mllm_report.py on fixed records: the claim verdicts and the tables they sit above."""

import math
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "scripts"))
from mini_mllm_report import _verdicts, nll_comparison, verdict  # noqa: E402


def test_verdict_noise_is_two_standard_errors_of_the_difference():
    line = verdict("claim", (0.6, 500), (0.5, 400))
    noise = 200 * math.sqrt(0.6 * 0.4 / 500 + 0.5 * 0.5 / 400)  # 6.6 points
    assert f"60.0 vs 50.0 % (+10.0, noise ±{noise:.1f}): reproduces." in line


@pytest.mark.parametrize(
    ("better", "worse", "level", "said"),
    [
        ((0.52, 500), (0.50, 500), False, "within noise"),  # +2 points, noise 6.3
        ((0.40, 500), (0.50, 500), False, "**does not reproduce** (the other way round)"),
        ((0.47, 500), (0.50, 500), True, "reproduces"),  # not noticeably worse
        ((0.40, 500), (0.50, 500), True, "**does not reproduce** (clearly worse)"),
    ],
)
def test_verdict_directions(better, worse, level, said):
    assert verdict("claim", better, worse, level=level).endswith(f": {said}.")


def test_verdict_without_one_run_says_so():
    assert verdict("claim", None, (0.5, 10)) == "- claim: not measured yet."


def _record(understanding: float | None, generation: dict[str, float], nll: tuple[float, float] | None = None) -> dict:
    return {"metrics": {
        "understanding": None if understanding is None else {"all": {"class_accuracy": understanding, "answers": 500}},
        "generation": {s: {"all": {"class_accuracy": a, "images": 200}} for s, a in generation.items()},
        "image_nll": None if nll is None else {"all": {"nll": nll[0], "se": nll[1], "images": 500}},
    }}


def test_nll_comparison_noise_is_two_standard_errors_of_the_difference():
    line = nll_comparison("what", (4.50, 0.03), (4.70, 0.04))  # noise 2 * 0.05 = 0.1
    assert line == "- what: image NLL 4.500 vs 4.700 (-0.200, noise ±0.100): the first lower."
    assert nll_comparison("what", (4.75, 0.03), (4.70, 0.04)).endswith("(+0.050, noise ±0.100): within noise.")
    assert nll_comparison("what", (4.90, 0.03), (4.70, 0.04)).endswith(": the first higher.")
    assert nll_comparison("what", None, (4.70, 0.04)) == "- what: not measured yet."


def test_verdicts_read_the_named_runs():
    rec = {
        "abl-dual": _record(0.70, {"3": 0.2}),
        "abl-single": _record(0.55, {"3": 0.2}),
        "abl-semantic": _record(0.56, {"3": 0.2}),
        "mllm-dual": _record(0.5, {"1": 0.10, "3": 0.12}),
        "gen-dual": _record(None, {"3": 0.1}, (4.5, 0.03)),
        "gen-single": _record(None, {"3": 0.1}, (4.7, 0.04)),
    }
    lines = [line for line in _verdicts(rec) if line.startswith("- ")]
    assert len(lines) == 7
    assert "70.0 vs 55.0 %" in lines[0] and lines[0].endswith("reproduces.")
    assert "70.0 vs 56.0 %" in lines[1]
    assert "55.0 vs 56.0 %" in lines[2] and lines[2].endswith(": reproduces.")  # level claim: -1 point is not worse
    assert "12.0 vs 10.0 %" in lines[3] and lines[3].endswith("within noise.")
    assert "4.500 vs 4.700" in lines[4] and lines[4].endswith("the first lower.")  # Dual-MLP vs one MLP
    assert lines[5].endswith("not measured yet.") and lines[6].endswith("not measured yet.")  # no table run
    assert all("not measured yet" in line for line in _verdicts({}) if line.startswith("- "))
