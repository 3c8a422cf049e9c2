"""The run folder's bookkeeping: its lock, the config it was started with, run.jsonl, metrics.jsonl.

* ``.lock`` holds an exclusive ``flock`` for the whole run, with the owner's pid inside: a second
  ``train`` into the same folder is refused instead of silently interleaving its steps. The lock
  dies with its process (even on ``kill -9``), so there is never a stale lock to remove by hand.
* ``config.yaml`` is the resolved config of the run. ``--resume`` compares the new config with it;
  a difference is refused unless explicitly accepted, and then recorded in ``run.jsonl`` (old ->
  new) while the previous ``config.yaml`` is kept as ``config.until_step_N.yaml``.
* ``metrics.jsonl`` is cut back to the checkpoint a run resumes from, so no step appears twice.
"""

from __future__ import annotations

import fcntl
import json
import os
import shutil
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml

from .errors import RunFolderLocked, TrainingError

__all__ = ["RunLock", "config_changes", "record_run_start", "trim_metrics"]

LOCK_NAME = ".lock"


class RunLock:
    """An exclusive lock on a run folder (created if missing) for the lifetime of the object.

    Raises:
        RunFolderLocked: another live process holds it (its pid is in the message).
    """

    def __init__(self, run_dir: Path) -> None:
        self.run_dir = run_dir
        self.created = not run_dir.exists()
        try:
            run_dir.mkdir(parents=True, exist_ok=True)
            self._file = open(run_dir / LOCK_NAME, "a+")  # noqa: SIM115 - held until release()
        except OSError as exc:
            raise TrainingError(f"cannot use {run_dir} as the run folder: {_reason(exc)}") from exc
        try:
            fcntl.flock(self._file.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            self._file.seek(0)
            owner = self._file.read().strip() or "unknown"
            self._file.close()
            raise RunFolderLocked(_locked_message(run_dir, owner)) from None
        try:
            self._file.seek(0)
            self._file.truncate()
            self._file.write(f"{os.getpid()}\n")
            self._file.flush()
        except OSError as exc:  # e.g. a full disk: nothing of this run may stay behind
            self.release(discard=True)
            raise TrainingError(f"cannot use {run_dir} as the run folder: {_reason(exc)}") from exc

    @staticmethod
    def check_free(run_dir: Path) -> None:
        """Refuse early (before any other check, writing nothing) when a live run holds the lock."""
        path = run_dir / LOCK_NAME
        if not path.is_file():
            return
        try:
            probe = open(path)  # noqa: SIM115 - closed below, which drops the probe's lock
        except OSError:
            return  # unreadable: the real lock attempt will tell
        with probe:
            try:
                fcntl.flock(probe.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                owner = probe.read().strip() or "unknown"
                raise RunFolderLocked(_locked_message(run_dir, owner)) from None

    def release(self, discard: bool = False) -> None:
        """Unlock. With ``discard`` (the run failed while setting up), delete the folder if this
        lock created it: everything in it was written by this run, and none of it is useful."""
        if self._file.closed:
            return
        if discard and self.created:
            shutil.rmtree(self.run_dir, ignore_errors=True)
        try:
            self._file.close()  # closing the descriptor releases the flock
        except OSError:
            pass  # the flush of a full disk; the descriptor is closed all the same


def _reason(exc: OSError) -> str:
    text = exc.strerror or str(exc)
    return text[:1].lower() + text[1:]


def _locked_message(run_dir: Path, owner: str) -> str:
    return f"{run_dir} is in use by another 'semhitok train' (pid {owner}); wait for it to finish or choose another --out"


def _normalised(config: Mapping[str, Any]) -> dict[str, Any]:
    """The config as ``config.yaml`` stores it (tuples become lists, and so on)."""
    return yaml.safe_load(yaml.safe_dump(dict(config), sort_keys=False)) or {}


def _flatten(d: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in d.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping) and value:
            out.update(_flatten(value, f"{name}."))
        else:
            out[name] = value
    return out


def config_changes(run_dir: Path, config: Mapping[str, Any]) -> dict[str, tuple[Any, Any]]:
    """``{dotted key: (value in config.yaml, new value)}`` for every key that differs ({} if none).

    Raises:
        TrainingError: the run folder has no readable ``config.yaml`` to compare with.
    """
    path = run_dir / "config.yaml"
    try:
        old = yaml.safe_load(path.read_text()) or {}
    except (OSError, yaml.YAMLError) as exc:
        raise TrainingError(f"--resume: cannot read {path} to compare the config with: {exc}") from exc
    if not isinstance(old, dict):
        raise TrainingError(f"--resume: {path} is not a mapping")
    before, after = _flatten(old), _flatten(_normalised(config))
    return {k: (before.get(k), after.get(k)) for k in sorted(set(before) | set(after)) if before.get(k) != after.get(k)}


def resume_config_changes(run_dir: Path, config: Mapping[str, Any], resume: bool, allow_change: bool) -> dict[str, tuple[Any, Any]]:
    """The config changes of a resumed run (:func:`config_changes`; {} for a new run).

    Raises:
        TrainingError: the config changed and ``allow_change`` (``--allow-config-change``) is off.
    """
    changes = config_changes(run_dir, config) if resume else {}
    if changes and not allow_change:
        raise TrainingError(
            f"--resume: the config differs from {run_dir / 'config.yaml'} in {', '.join(changes)}; "
            "pass --allow-config-change to continue with the new values (the change is recorded in run.jsonl)"
        )
    return changes


def record_run_start(run_dir: Path, config: Mapping[str, Any], info: Mapping[str, Any], changes: Mapping[str, tuple[Any, Any]], step: int) -> None:
    """Write ``config.yaml`` and append this start to ``run.jsonl``.

    When the config changed on resume, the previous ``config.yaml`` is kept as
    ``config.until_step_N.yaml`` and the change (old -> new) is recorded in ``run.jsonl``.
    """
    config_file = run_dir / "config.yaml"
    if changes and config_file.is_file():
        config_file.replace(run_dir / f"config.until_step_{step:08d}.yaml")
    _write_text_atomic(config_file, yaml.safe_dump(_normalised(config), sort_keys=False))
    entry = {**info, "started": time.strftime("%Y-%m-%dT%H:%M:%S")}
    if changes:
        entry["config_changes"] = {k: {"old": old, "new": new} for k, (old, new) in changes.items()}
    with open(run_dir / "run.jsonl", "a") as f:
        f.write(json.dumps(entry) + "\n")


def trim_metrics(run_dir: Path, step: int) -> int:
    """Drop the ``metrics.jsonl`` lines logged after ``step`` (the checkpoint a run resumes from);
    returns how many were dropped. The lines past it will be logged again by the resumed run."""
    path = run_dir / "metrics.jsonl"
    if not path.is_file():
        return 0
    kept, dropped = [], 0
    for line in path.read_text().splitlines():
        try:
            logged = json.loads(line).get("step")
        except (ValueError, AttributeError):
            logged = None  # a line cut short by a kill: drop it
        if isinstance(logged, int) and logged <= step:
            kept.append(line)
        else:
            dropped += 1
    if dropped:
        _write_text_atomic(path, "".join(f"{line}\n" for line in kept))
    return dropped


def _write_text_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text)
    tmp.replace(path)
