"""Codebook synchronisation under torch.distributed: 2 CPU (gloo) ranks, each with its own batches."""

import os
import time

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from semhitok.quantizers import EMAVectorQuantizer, HierarchicalQuantizer

WORLD = 2
STEPS = 3
EMA_K, EMA_D, EMA_N = 16, 4, 24
HQ_K, HQ_M, HQ_D, HQ_N = 4, 6, 5, 10


def _batch(rank, step, kind):
    """The deterministic batch that `rank` sees at `step`, different on every rank."""
    g = torch.Generator().manual_seed(1000 * (rank + 1) + 10 * step + kind)
    if kind == 2:  # hierarchical: inputs and parent ids
        return torch.randn(HQ_N, HQ_D, generator=g), torch.randint(0, HQ_K, (HQ_N,), generator=g)
    return torch.randn(EMA_N, EMA_D, generator=g) * (1 + rank)


def _ema(random_parts):
    torch.manual_seed(1234)  # identical initial codebook on every rank and in the reference run
    if random_parts:
        return EMAVectorQuantizer(EMA_K, EMA_D, decay=0.9, kmeans_init=True, kmeans_iters=5, dead_code_threshold=1.0)
    return EMAVectorQuantizer(EMA_K, EMA_D, decay=0.9)


def _hq():
    torch.manual_seed(4321)
    return HierarchicalQuantizer(HQ_K, HQ_M, HQ_D, dead_code_threshold=1.0, usage_decay=0.5)


def _buffers(module):
    return {k: v.detach().clone() for k, v in module.state_dict().items()}


def _worker(rank, init_file, out_dir):
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=WORLD)
    try:
        result = {}
        # EMA VQ with k-means init and restarts: the random decisions must be shared.
        vq = _ema(random_parts=True).train()
        torch.manual_seed(rank)  # different RNG streams per rank, so only explicit syncing can agree
        restarts = []
        orig = vq._restart_dead_codes

        def counting_restart(flat):
            restarts.append(int((vq.cluster_size < vq.dead_code_threshold).sum()))
            orig(flat)

        vq._restart_dead_codes = counting_restart
        for step in range(STEPS):
            vq(_batch(rank, step, 0))
        result.update({f"random.{k}": v for k, v in _buffers(vq).items()})
        result["random.restarts"] = torch.tensor(sum(restarts))

        # Plain EMA VQ: the update must be the one of the concatenated global batch.
        vq = _ema(random_parts=False).train()
        for step in range(STEPS):
            vq(_batch(rank, step, 1))
        result.update({f"plain.{k}": v for k, v in _buffers(vq).items()})

        # Hierarchical quantizer with sub-code restarts.
        hq = _hq().train()
        torch.manual_seed(100 + rank)
        changed = 0
        for step in range(STEPS):
            before = hq.weight.detach().clone()
            p, parents = _batch(rank, step, 2)
            hq(p, parents)
            changed += int((hq.weight.detach() != before).any(-1).sum())
        result.update({f"hq.{k}": v for k, v in _buffers(hq).items()})
        result["hq.restarts"] = torch.tensor(changed)
        torch.save(result, os.path.join(out_dir, f"rank{rank}.pt"))
    finally:
        dist.destroy_process_group()


def test_two_ranks_hold_identical_codebooks(tmp_path):
    """Both ranks end bit-identical (k-means, restarts, EMA, SGHC restarts); the EMA equals a global-batch run."""
    # fork, not spawn: the children inherit the imported package instead of importing it again
    # (which costs more than the whole test); each child uses one thread.
    ctx = mp.start_processes(
        _worker, args=(str(tmp_path / "init"), str(tmp_path)), nprocs=WORLD, join=False, start_method="fork"
    )
    deadline = time.monotonic() + 120
    while not ctx.join(timeout=1):
        if time.monotonic() > deadline:
            for proc in ctx.processes:
                proc.kill()
            pytest.fail("distributed workers did not finish within 120 s")
    r0 = torch.load(tmp_path / "rank0.pt", weights_only=True)
    r1 = torch.load(tmp_path / "rank1.pt", weights_only=True)

    assert r0.keys() == r1.keys()
    for name in r0:
        assert torch.equal(r0[name], r1[name]), f"{name} differs between ranks"

    # The synchronised random paths really ran.
    assert bool(r0["random.initialized"])
    assert int(r0["random.restarts"]) > 0
    assert int(r0["hq.restarts"]) > 0

    # The plain EMA update equals one process that sees both ranks' batches at once.
    ref = _ema(random_parts=False).train()
    for step in range(STEPS):
        ref(torch.cat([_batch(r, step, 1) for r in range(WORLD)]))
    for name in ("embed", "cluster_size", "embed_sum"):
        torch.testing.assert_close(r0[f"plain.{name}"], getattr(ref, name), rtol=1e-5, atol=1e-6)
    # ... and not a process that sees one rank's batch only.
    solo = _ema(random_parts=False).train()
    for step in range(STEPS):
        solo(_batch(0, step, 1))
    assert not torch.allclose(r0["plain.embed_sum"], solo.embed_sum, rtol=1e-3, atol=1e-3)
