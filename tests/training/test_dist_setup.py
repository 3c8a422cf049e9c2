"""semhitok.distributed: the process-group timeout (SEMHITOK_DIST_TIMEOUT) and single-process setup."""

import os
import subprocess
import sys
import textwrap
import time
from datetime import timedelta

import pytest
import torch

from semhitok import distributed


def test_timeout_from_env(monkeypatch):
    monkeypatch.delenv(distributed.TIMEOUT_ENV, raising=False)
    assert distributed.timeout_from_env() == timedelta(seconds=600)  # not gloo's 30 minutes
    monkeypatch.setenv(distributed.TIMEOUT_ENV, "42.5")
    assert distributed.timeout_from_env() == timedelta(seconds=42.5)
    for bad in ("0", "-3", "abc", "inf", "nan"):
        monkeypatch.setenv(distributed.TIMEOUT_ENV, bad)
        with pytest.raises(ValueError, match=f"SEMHITOK_DIST_TIMEOUT='{bad}': expected a positive number of seconds"):
            distributed.timeout_from_env()


def test_single_process_setup_touches_nothing(monkeypatch):
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    ctx = distributed.setup()
    assert (ctx.rank, ctx.world_size, ctx.is_main) == (0, 1, True)
    assert not torch.distributed.is_initialized()
    x = torch.arange(3.0)
    assert distributed.mean_over_ranks(x) is x and torch.equal(distributed.all_gather_tensors(x, ctx.device)[0], x)


_FROZEN_RANK = textwrap.dedent(
    """
    import os, sys, time
    from semhitok import distributed
    ctx = distributed.setup()
    if ctx.rank == 1:
        time.sleep(60)  # a frozen rank (SIGSTOP, a hung filesystem, ...)
        sys.exit(0)
    started = time.monotonic()
    try:
        distributed.barrier()
    except Exception as exc:
        print(f"TIMEOUT after {time.monotonic() - started:.1f}s", flush=True)
        os._exit(3)
    print("NO TIMEOUT", flush=True)
    """
)


@pytest.mark.slow
def test_a_frozen_rank_times_out(tmp_path):
    """Rank 0 waits for a frozen rank 1 only SEMHITOK_DIST_TIMEOUT seconds, not gloo's 30 minutes."""
    script = tmp_path / "frozen_rank.py"
    script.write_text(_FROZEN_RANK)
    env = {**os.environ, distributed.TIMEOUT_ENV: "3", "OMP_NUM_THREADS": "1"}
    started = time.monotonic()
    result = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", str(script)],
        env=env, capture_output=True, text=True, timeout=120,
    )
    assert "TIMEOUT after" in result.stdout, result.stdout + result.stderr[-2000:]
    waited = float(result.stdout.split("TIMEOUT after ")[1].split("s")[0])
    assert 2.5 <= waited < 30
    assert time.monotonic() - started < 90  # torchrun then ends the job instead of waiting for rank 1
