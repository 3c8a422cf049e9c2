"""``semhitok train`` and ``export`` driven as a user would: a locked run folder, a changed config
on resume, bad data (no run folder left), Ctrl-C / SIGTERM (a checkpoint, exit 130 / 143), full
and read-only disks."""

from __future__ import annotations

import fcntl
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image

from semhitok.training import list_checkpoints

ROOT = Path(__file__).resolve().parents[2]
PHOTOS = ROOT / "src" / "semhitok" / "assets" / "photos"
STAGE1 = ROOT / "configs" / "tiny" / "stage1_semantic.yaml"
FAST = ["data.batch_size=4", "run.log_every=1"]


@pytest.fixture(scope="module")
def photos(tmp_path_factory) -> Path:
    """Ten 96 px images (the bundled photos and their mirror images): quick to decode."""
    folder = tmp_path_factory.mktemp("photos")
    for i, path in enumerate(sorted(PHOTOS.glob("*.jpg"))):
        image = Image.open(path).convert("RGB")
        image.thumbnail((96, 96))
        image.save(folder / f"{i}.png")
        image.transpose(Image.Transpose.FLIP_LEFT_RIGHT).save(folder / f"{i}_flip.png")
    return folder


@pytest.fixture(scope="module")
def trained_run(photos, tmp_path_factory) -> Path:
    """A finished 2-step stage-1 run folder (read it, do not modify it)."""
    from semhitok.cli.main import main

    run = tmp_path_factory.mktemp("trained") / "run"
    assert main(["train", str(STAGE1), "--data", str(photos), "--out", str(run), "--max-steps", "2", "--quiet", *FAST]) == 0
    return run


def _train_args(photos: Path, out: Path, *extra: str) -> list[str]:
    return ["train", str(STAGE1), "--data", str(photos), "--out", str(out), "--quiet", *FAST, *extra]


def _start(photos: Path, out: Path) -> subprocess.Popen:
    """The console script, training "forever" (checkpoints only when stopped), its log on stdout."""
    script = Path(sys.executable).with_name("semhitok")
    args = _train_args(photos, out, "run.max_steps=100000", "run.checkpoint_every=100000")
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    return subprocess.Popen([str(script), *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)


def _wait_for_step(proc: subprocess.Popen, step: int) -> None:
    for line in proc.stdout:  # quiet mode: one "step N ..." line per logged step
        if line.startswith(f"step {step} "):
            return
    raise AssertionError(f"the run ended before step {step}: {proc.wait()} {proc.stderr.read()[-2000:]}")


def _only_line(err: str) -> str:
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1, err
    return lines[0]


def test_locked_run_folder_and_sigterm(photos, tmp_path, cli, error_line):
    """A second train into a folder in use is refused naming the owner's pid; SIGTERM (pre-emption)
    finishes the step, saves a checkpoint and exits 143 with one line naming it."""
    out = tmp_path / "run"
    proc = _start(photos, out)
    try:
        _wait_for_step(proc, 2)
        code, stdout, err = cli(*_train_args(photos, out, "--resume"))
        assert code == 2 and stdout == ""
        error_line(err, f"{out} is in use by another 'semhitok train' (pid {proc.pid})")
        proc.send_signal(signal.SIGTERM)
        code, err = proc.wait(timeout=120), proc.stderr.read()
    finally:
        proc.kill()
    assert code == 143
    line = _only_line(err)
    step = list_checkpoints(out)[-1].step
    assert line == f"semhitok: interrupted by SIGTERM after step {step}; checkpoint {out}/checkpoints/step_{step:08d}; continue with --resume"
    assert step >= 2 and not (out / "model").exists()


def test_ctrl_c_saves_a_checkpoint_and_resume_continues(photos, tmp_path, cli):
    out = tmp_path / "run"
    proc = _start(photos, out)
    try:
        _wait_for_step(proc, 1)
        proc.send_signal(signal.SIGINT)
        code, err = proc.wait(timeout=120), proc.stderr.read()
    finally:
        proc.kill()
    assert code == 130
    step = list_checkpoints(out)[-1].step
    assert _only_line(err).startswith(f"semhitok: interrupted by SIGINT after step {step}; checkpoint {out}/checkpoints/step_{step:08d}")
    # The same command with --resume (and a nearer end) continues: that is a config change to accept.
    code, _, err = cli(*_train_args(photos, out, "run.max_steps=100000", "run.checkpoint_every=100000", "--resume", "--max-steps", str(step + 2), "--allow-config-change"))
    assert code == 0, err
    steps = [json.loads(line)["step"] for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert steps == list(range(1, step + 3))


def test_resume_with_another_config_is_refused_unless_allowed(trained_run, photos, tmp_path, cli, error_line):
    import shutil

    run = tmp_path / "run"
    shutil.copytree(trained_run, run)
    before = {p.name: p.read_bytes() for p in run.iterdir() if p.is_file()}
    code, _, err = cli(*_train_args(photos, run, "--resume", "--max-steps", "2", "optim.lr=3e-4", "data.batch_size=2"))
    assert code == 2
    error_line(err, "the config differs from", "in data.batch_size, optim.lr;", "--allow-config-change")
    assert {p.name: p.read_bytes() for p in run.iterdir() if p.is_file()} == before  # nothing written

    code, _, err = cli(*_train_args(photos, run, "--max-steps", "2", "--allow-config-change"))
    assert code == 2
    error_line(err, "--allow-config-change only applies with --resume")

    code, _, err = cli(*_train_args(photos, run, "--resume", "--max-steps", "3", "optim.lr=3e-4", "--allow-config-change"))
    assert code == 0, err
    change = json.loads((run / "run.jsonl").read_text().splitlines()[-1])["config_changes"]
    assert change == {"optim.lr": {"old": 1e-3, "new": 3e-4}, "run.max_steps": {"old": 2, "new": 3}}


@pytest.mark.parametrize("data", ["missing", "junk", "a file"])
def test_bad_data_is_one_line_and_leaves_no_run_folder(data, tmp_path, cli, error_line):
    path = tmp_path / "data"
    if data == "junk":
        path.mkdir()
        for i in range(40):
            (path / f"{i}.jpg").write_bytes(b"not a jpeg")
    elif data == "a file":
        path.write_text("hello")
    code, stdout, err = cli(*_train_args(path, tmp_path / "run", "--max-steps", "2", "data.min_seen=5"))
    assert code == 2 and stdout == ""
    error_line(err, str(path.name))
    assert not (tmp_path / "run").exists()


def test_locked_folder_is_refused_in_process(photos, tmp_path, cli, error_line):
    """The lock is a real flock: any other open of RUN_DIR/.lock that holds it blocks a train."""
    run = tmp_path / "run"
    run.mkdir()
    with open(run / ".lock", "w") as held:
        fcntl.flock(held.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        held.write("4242\n")
        held.flush()
        code, _, err = cli(*_train_args(photos, run, "--max-steps", "2"))
    assert code == 2
    error_line(err, "(pid 4242)")
    assert [p.name for p in run.iterdir()] == [".lock"]


def test_unwritable_run_folder(photos, tmp_path, readonly_fs, cli, error_line):
    code, _, err = cli(*_train_args(photos, readonly_fs / "run", "--max-steps", "2"))
    assert code == 2
    error_line(err, str(readonly_fs / "run"))
    assert not (readonly_fs / "run").exists()
    (tmp_path / "file").write_text("x")
    code, _, err = cli(*_train_args(photos, tmp_path / "file", "--max-steps", "2"))
    assert code == 2
    error_line(err, "exists and is not a folder")


def test_train_into_a_full_disk_is_one_line_and_leaves_nothing(photos, full_fs, cli, error_line):
    code, _, err = cli(*_train_args(photos, full_fs / "run", "--max-steps", "2"))
    assert code == 2
    error_line(err, str(full_fs / "run"), "no space left on device")
    assert list(full_fs.iterdir()) == []


def test_export_to_a_full_disk_leaves_nothing(trained_run, full_fs, cli, error_line):
    code, _, err = cli("export", trained_run, "-o", full_fs / "model")
    assert code == 2
    error_line(err, str(full_fs / "model"), "no space left on device")
    assert list(full_fs.iterdir()) == []


def test_export_of_a_damaged_checkpoint(trained_run, tmp_path, cli, error_line):
    import shutil

    run = tmp_path / "run"
    shutil.copytree(trained_run, run)
    (list_checkpoints(run)[-1].path / "model.safetensors").write_bytes(b"garbage")
    code, _, err = cli("export", run, "-o", tmp_path / "model")
    assert code == 2
    error_line(err, "unreadable model.safetensors")
    assert not (tmp_path / "model").exists()
    code, _, err = cli("export", tmp_path / "nothing", "-o", tmp_path / "model")
    assert code == 2
    error_line(err, "has no checkpoint to export")
