"""torchrun with 2 CPU processes (gloo): identical codebooks on every rank, and the same result as
one process with the same global batch."""

import json
import statistics
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from semhitok import SemHiTok
from semhitok.training import list_checkpoints
from semhitok.training.checkpoint import load_checkpoint

ROOT = Path(__file__).resolve().parents[2]


def _train(out: Path, data: Path, nproc: int, batch: int, config: str = "stage1_semantic.yaml", extra: tuple[str, ...] = ()) -> None:
    # k-means init draws random samples in a rank-dependent order; switch it off so the 1- and
    # 2-process runs start from the same codebook and can be compared number for number.
    args = [
        "-m", "semhitok", "train", str(ROOT / "configs" / "tiny" / config), "--data", str(data),
        "--out", str(out), "--max-steps", "3", "--quiet", f"data.batch_size={batch}", "run.checkpoint_every=3",
        *(extra or ("model.kmeans_init=false",)),
    ]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    if nproc > 1:
        cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(nproc), *args]
    else:
        cmd = [sys.executable, *args]
    result = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=180)
    assert result.returncode == 0, result.stderr[-3000:]


@pytest.mark.slow
def test_two_rank_ddp_matches_one_rank(tmp_path, photos):
    data = photos
    _train(tmp_path / "ddp", data, nproc=2, batch=2)
    _train(tmp_path / "single", data, nproc=1, batch=4)
    ddp, single = SemHiTok.from_pretrained(tmp_path / "ddp" / "model"), SemHiTok.from_pretrained(tmp_path / "single" / "model")
    # Same global batch, same data, same start: equal up to the order of floating-point sums.
    for (name, a), b in zip(ddp.state_dict().items(), single.state_dict().values()):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5, msg=name)
    start = SemHiTok(ddp.config)  # training moved the codebook: the comparison is not of two untouched models
    assert not torch.equal(ddp.semantic_quantizer.codebook, start.semantic_quantizer.codebook)
    loss_ddp = [json.loads(line)["loss"] for line in (tmp_path / "ddp" / "metrics.jsonl").read_text().splitlines()]
    loss_single = [json.loads(line)["loss"] for line in (tmp_path / "single" / "metrics.jsonl").read_text().splitlines()]
    assert loss_ddp == pytest.approx(loss_single, rel=1e-4)


@pytest.mark.slow
def test_two_rank_stage2_with_gan_and_accumulation_matches_one_rank(tmp_path, photos):
    """Stage 2 under DDP with the discriminator on and gradient accumulation equals one process
    with the same global batch: the adaptive GAN weight and the discriminator see the whole batch."""
    _train(tmp_path / "s1", photos, nproc=1, batch=4)
    extra = (f"init={tmp_path / 's1' / 'model'}", "loss.disc_start=1", "optim.grad_accum=2")
    _train(tmp_path / "ddp", photos, nproc=2, batch=2, config="stage2_pixel.yaml", extra=extra)
    _train(tmp_path / "single", photos, nproc=1, batch=4, config="stage2_pixel.yaml", extra=extra)
    ddp, single = SemHiTok.from_pretrained(tmp_path / "ddp" / "model"), SemHiTok.from_pretrained(tmp_path / "single" / "model")
    state_ddp = load_checkpoint(list_checkpoints(tmp_path / "ddp")[-1].path, ddp)
    state_single = load_checkpoint(list_checkpoints(tmp_path / "single")[-1].path, single)
    assert state_ddp["step"] == 3
    # Compared tensor by tensor as a norm, against how far training moved the tensor. Float noise
    # (another summation order under DDP) is amplified by AdamW on near-zero gradient elements and
    # by the adaptive GAN weight: most tensors stay near 1e-5 of their movement, but single ones
    # were seen at 1.15e-3 (pixel_decoder.proj_in.weight) and 4.1e-3 (pixel_decoder.trunk.pos_embed)
    # on a loaded 2-core AMD EPYC. A real DDP error moves whole tensors alike: leaving the
    # rank-average out of the adaptive GAN weight gives 5e-3 to 5e-2 of the movement across the
    # generator. So the median tensor must stay at the noise floor (1e-3) and no tensor may be
    # off by as much as the error moves the largest (2e-2); the losses are compared below too.
    start = SemHiTok.from_pretrained(tmp_path / "s1" / "model")
    ratios = {}
    for (name, a), b, s in zip(ddp.state_dict().items(), single.state_dict().values(), start.state_dict().values()):
        moved = (b.double() - s.double()).norm().item()
        if not a.is_floating_point() or moved == 0.0:
            torch.testing.assert_close(a, b, rtol=0, atol=0, msg=name)  # untouched: identical
            continue
        ratios[name] = (a.double() - b.double()).norm().item() / moved
    worst = sorted(ratios.items(), key=lambda kv: -kv[1])[:3]
    median = statistics.median(ratios.values())
    assert median <= 1e-3 and worst[0][1] <= 2e-2, f"DDP differs from one process by {median:.3g} of the movement (median tensor); worst {worst}"
    # Adam divides by sqrt(v): on the discriminator's near-zero gradients (~1e-9, against eps 1e-8)
    # float noise moves a weight by a few % of one lr-sized step (seen: 2.5e-5 at lr 1e-3). A
    # discriminator trained on another batch differs by whole steps (~1e-3), far beyond 1e-4.
    # The same holds element by element: noise moves single weights (seen: 2.5e-5 on one CPU, and
    # 2.2e-3, two lr-sized steps of one weight whose gradient sign flipped, on a 2-core AMD EPYC),
    # while another batch moves nearly all of them by about a step. So the median weight must be
    # unmoved (1e-5) and at most 1% of the weights may be off by more than 1e-4.
    diffs = torch.cat([(a - state_single["discriminator"][name]).abs().flatten() for name, a in state_ddp["discriminator"].items()])
    moved = float((diffs > 1e-4).float().mean())
    assert float(diffs.median()) <= 1e-5 and moved <= 0.01, f"discriminator: median {float(diffs.median()):.3g}, {moved:.2%} of weights off by > 1e-4, max {float(diffs.max()):.3g}"
    lines = {run: [json.loads(line) for line in (tmp_path / run / "metrics.jsonl").read_text().splitlines()] for run in ("ddp", "single")}
    last = lines["ddp"][-1]
    assert last["disc_disc_factor"] == 1.0 and last["gan"] != 0.0  # the GAN really was on
    # rel 1e-3: the adaptive weight is a ratio of two gradient norms, and the summation order under
    # DDP moved it by more than 1e-4 relative on a 2-core AMD EPYC; computed from one rank's half of
    # the batch it differs by far more.
    for key in ("loss", "adaptive_weight", "disc_loss"):
        ddp_values, single_values = [line[key] for line in lines["ddp"]], [line[key] for line in lines["single"]]
        assert ddp_values == pytest.approx(single_values, rel=1e-3), f"{key}: {ddp_values} vs {single_values}"


def _divergence_worker(rank: int, init_file: str, out_dir: str) -> None:
    import torch.distributed as dist

    from semhitok import SemHiTokConfig
    from semhitok.training.loop import codebook_rank_divergence

    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=2)
    try:
        torch.manual_seed(0)  # the same model on both ranks
        model = SemHiTok(SemHiTokConfig.from_preset("tiny"), load_teacher_weights=False)
        in_sync = codebook_rank_divergence(model)
        if rank == 1:  # one rank's EMA codebook drifts by 0.25 in one entry
            model.semantic_quantizer.embed[3, 1] += 0.25
        drifted = codebook_rank_divergence(model)
        torch.save({"in_sync": in_sync, "drifted": drifted}, Path(out_dir) / f"rank{rank}.pt")
    finally:
        dist.destroy_process_group()


def test_codebook_rank_divergence_detects_a_drifted_rank(tmp_path):
    """The check the loop runs at every checkpoint: 0 when the ranks agree, the size of the
    difference on every rank when one rank's codebook moved."""
    import torch.multiprocessing as mp

    mp.spawn(_divergence_worker, args=(str(tmp_path / "init"), str(tmp_path)), nprocs=2, join=True)
    for rank in (0, 1):
        result = torch.load(tmp_path / f"rank{rank}.pt", weights_only=True)
        assert result["in_sync"] == 0.0
        assert result["drifted"] == pytest.approx(0.25, abs=1e-6)
