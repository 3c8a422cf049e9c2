"""``semhitok train`` with a bad config, driven as a user would: every case is one line on stderr
(``semhitok: error: FILE: KEY: ...``), exit status 2, and no run folder left behind.

The table covers the classes of issue 7's "config values are not type-checked" and "YAML": wrong
value types in the file and in ``key=value`` overrides, unknown keys, Python tags, YAML syntax
errors, an absurdly large model, and a pixel stage that would silently train on a random VGG16.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from semhitok.cli import main

ROOT = Path(__file__).parents[2]
PHOTOS = ROOT / "assets" / "photos"
STAGE1 = "stage: semantic\nmodel:\n  preset: tiny\nrun:\n  max_steps: 2\n"
# Stage 2 with no loss section: the default LossConfig asks for LPIPS on VGG16 weights nobody gave.
STAGE2 = "stage: pixel\ninit: /nonexistent/model\nrun:\n  max_steps: 2\n"

# (id, config text, overrides, text the one error line must contain after "semhitok: error: FILE: ")
CASES = [
    # -- the value types, as overrides and as YAML
    ("lr-abc", STAGE1, ["optim.lr=abc"], "optim.lr: expected a number, got 'abc' (str)"),
    ("lr-list", STAGE1 + "optim:\n  lr: [1]\n", [], "optim.lr: expected a number, got [1] (list)"),
    ("betas-scalar", STAGE1 + "optim:\n  betas: 0.9\n", [], "optim.betas: expected a list of 2 numbers, got 0.9 (float)"),
    ("batch-str", STAGE1 + "data:\n  batch_size: \"8\"\n", [], "data.batch_size: expected an integer, got '8' (str)"),
    ("batch-float", STAGE1, ["data.batch_size=8.5"], "data.batch_size: expected an integer, got 8.5 (float)"),
    ("run-ema-x", STAGE1, ["run.ema_decay=x"], "run.ema_decay: expected a number or null, got 'x' (str)"),
    ("model-ema-x", STAGE1, ["model.ema_decay=x"], "model.ema_decay: expected a number, got 'x' (str)"),
    ("grad-clip-x", STAGE1, ["optim.grad_clip=x"], "optim.grad_clip: expected a number or null, got 'x' (str)"),
    ("max-steps-inf", STAGE1, ["run.max_steps=.inf"], "run.max_steps: expected an integer, got inf (float)"),
    ("max-steps-inf-word", "stage: semantic\nmodel: {preset: tiny}\nrun:\n  max_steps: inf\n", [], "run.max_steps: expected an integer, got 'inf' (str)"),
    ("max-steps-str", "stage: semantic\nmodel: {preset: tiny}\nrun:\n  max_steps: \"10\"\n", [], "run.max_steps: expected an integer, got '10' (str)"),
    ("log-every-bool", STAGE1, ["run.log_every=true"], "run.log_every: expected an integer, got True (bool)"),
    ("checkpoint-every-float", STAGE1, ["run.checkpoint_every=2.5"], "run.checkpoint_every: expected an integer, got 2.5 (float)"),
    ("lr-nan", STAGE1, ["optim.lr=.nan"], "optim.lr: expected a finite number, got nan (float)"),
    ("precision", STAGE1, ["run.precision=fp16"], "run.precision: expected one of 'fp32', 'bf16', 'auto', got 'fp16' (str)"),
    ("section-scalar", STAGE1, ["optim=fast"], "optim: expected a mapping (a config section), got 'fast' (str)"),
    ("loss-weight-str", STAGE1, ["loss.l1_weight=much"], "loss.l1_weight: expected a number, got 'much' (str)"),
    ("range", STAGE1, ["optim.lr=-1"], "optim.lr: must be > 0, got -1.0"),
    # -- unknown keys, at every level, and typed by stage
    ("unknown-top", STAGE1 + "optimizer:\n  lr: 1\n", [], "unknown key optimizer (known: stage, model, init"),
    ("unknown-section-key", STAGE1, ["run.maxsteps=3"], "run: unknown key maxsteps (known: max_steps"),
    ("unknown-model-key", STAGE1, ["model.pixel_decoder.widht=64"], "model.pixel_decoder: unknown key widht"),
    ("unknown-loss-key", STAGE1, ["loss.perceptual_weight=0"], "loss: unknown key perceptual_weight (known: cosine_weight, l1_weight)"),
    ("unknown-model-key-with-init", STAGE2, ["loss.perceptual_weight=0", "model.codebok_size=8"], "model: unknown key codebok_size"),
    ("model-type-with-init", STAGE2, ["loss.perceptual_weight=0", "model.codebook_size=big"], "model.codebook_size: expected an integer, got 'big' (str)"),
    # -- YAML: Python tags are refused (never run), syntax errors and tabs name the line
    ("python-tag", STAGE1 + "data:\n  path: !!python/object/apply:os.system ['touch PWNED']\n", [], "line 7, column 9: refusing the Python tag !!python/object/apply:os.system"),
    ("python-tag-override", STAGE1, ["run.seed=!!python/object/apply:os.system ['touch PWNED']"], "cannot parse the value: refusing the Python tag"),
    ("syntax", STAGE1 + "optim: {lr: 1\n", [], "line 7, column 1: while parsing a flow mapping"),
    ("tab", "stage: semantic\nmodel:\n\tpreset: tiny\n", [], "line 3, column 1: a tab character cannot indent YAML; use spaces"),
    ("duplicate-key", STAGE1 + "run:\n  seed: 1\n", [], "line 6, column 1: the key 'run' is given twice"),
    ("override-syntax", STAGE1, ["optim.lr=[1,"], "override 'optim.lr=[1,': cannot parse the value"),
    ("top-level-list", "- stage: semantic\n", [], "a training config must be a mapping at the top level"),
    # -- sizes and the perceptual backbone
    ("absurd-codebook", STAGE1, ["model.codebook_size=1099511627776"], "model.codebook_size: 1099511627776 makes the model need about 276.0 TiB"),
    ("absurd-width", STAGE1, ["model.pixel_decoder.width=1048576", "model.pixel_decoder.num_heads=1"], "model.pixel_decoder.width: 1048576 makes the model need"),
    ("random-vgg", STAGE2, [], "loss.vgg_weights: perceptual_weight is 1 but no VGG16 weights are given"),
]


def _config(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    return path


@pytest.mark.parametrize("name, text, overrides, message", CASES, ids=[c[0] for c in CASES])
def test_bad_config_is_one_line_exit_2_and_no_run_folder(tmp_path, capsys, monkeypatch, name, text, overrides, message):
    monkeypatch.chdir(tmp_path)  # a stray `touch PWNED` would land here
    config = _config(tmp_path, text)
    out = tmp_path / "runs" / "r"
    code = main(["train", str(config), *overrides, "--data", str(PHOTOS), "--out", str(out)])
    captured = capsys.readouterr()
    lines = captured.err.splitlines()
    assert code == 2, captured.err
    assert len(lines) == 1 and lines[0].startswith(f"semhitok: error: {config}: "), captured.err
    assert message in lines[0]
    assert captured.out == ""
    assert not out.exists() and not (tmp_path / "runs").exists()
    assert not (tmp_path / "PWNED").exists()


def test_fixes_named_by_the_vgg_message_work(tmp_path, capsys):
    """The refusal names two ways out; the second (no perceptual term) passes the config check
    and the run gets as far as the missing --init folder."""
    config = _config(tmp_path, STAGE2)
    out = tmp_path / "r"
    assert main(["train", str(config), "--data", str(PHOTOS), "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert "loss.vgg_weights=/path/to/vgg16.pth" in err and "loss.perceptual_weight=0" in err
    code = main(["train", str(config), "loss.perceptual_weight=0", "--data", str(PHOTOS), "--out", str(out)])
    err = capsys.readouterr().err
    assert code == 2 and "vgg" not in err.lower() and "/nonexistent/model" in err
    assert not out.exists()


@pytest.mark.parametrize(
    "text, overrides, message",
    [
        (STAGE1, ["optim.lr=abc"], "optim.lr: expected a number, got 'abc' (str)"),
        (STAGE1 + "seed: !!python/object/apply:os.system ['touch PWNED']\n", [], "refusing the Python tag"),
        (STAGE1, ["model.codebook_size=1099511627776"], "model.codebook_size: 1099511627776"),
    ],
)
def test_console_script(tmp_path, text, overrides, message):
    """The installed ``semhitok`` script, in a real process: exit 2, one stderr line, nothing written."""
    config = _config(tmp_path, text)
    script = Path(sys.executable).parent / "semhitok"
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    proc = subprocess.run(
        [str(script), "train", str(config), *overrides, "--data", str(PHOTOS), "--out", str(tmp_path / "r")],
        capture_output=True, text=True, cwd=tmp_path, env=env, timeout=120,
    )
    lines = proc.stderr.splitlines()
    assert proc.returncode == 2, proc.stderr
    assert len(lines) == 1 and lines[0].startswith(f"semhitok: error: {config}: ") and message in lines[0]
    assert proc.stdout == ""
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad.yaml"]
