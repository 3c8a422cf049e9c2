"""torchrun with 2 CPU processes (gloo): identical codebooks on every rank, and the same result as
one process with the same global batch."""

import json
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
    # Compared tensor by tensor as a norm, against how far training moved the tensor: AdamW turns
    # a float-noise change of a near-zero gradient element into a visible change of that one
    # weight (machine-dependent, seen at 1e-5 on one CPU), while the whole tensor stays at the
    # noise floor (usually ~1e-5 of its movement; once 1.15e-3, pixel_decoder.proj_in.weight on a
    # loaded 2-core AMD EPYC). A real DDP error moves whole tensors: leaving the rank-average out of
    # the adaptive GAN weight gives 5e-3 to 5e-2 of the movement. 2.5e-3 lies between the two.
    start = SemHiTok.from_pretrained(tmp_path / "s1" / "model")
    for (name, a), b, s in zip(ddp.state_dict().items(), single.state_dict().values(), start.state_dict().values()):
        moved = (b.double() - s.double()).norm().item()
        if not a.is_floating_point() or moved == 0.0:
            torch.testing.assert_close(a, b, rtol=0, atol=0, msg=name)  # untouched: identical
            continue
        off = (a.double() - b.double()).norm().item()
        worst = (a - b).abs().max().item()
        assert off <= 2.5e-3 * moved, f"{name}: DDP differs from one process by {off:.3g} (one weight by {worst:.3g}), training moved it by {moved:.3g}"
    # Adam divides by sqrt(v): on the discriminator's near-zero gradients (~1e-9, against eps 1e-8)
    # float noise moves a weight by a few % of one lr-sized step (seen: 2.5e-5 at lr 1e-3). A
    # discriminator trained on another batch differs by whole steps (~1e-3), far beyond 1e-4.
    for name, a in state_ddp["discriminator"].items():
        torch.testing.assert_close(a, state_single["discriminator"][name], rtol=0, atol=1e-4, msg=f"discriminator {name}")
    lines = {run: [json.loads(line) for line in (tmp_path / run / "metrics.jsonl").read_text().splitlines()] for run in ("ddp", "single")}
    last = lines["ddp"][-1]
    assert last["disc_disc_factor"] == 1.0 and last["gan"] != 0.0  # the GAN really was on
    for key in ("loss", "adaptive_weight", "disc_loss"):
        assert [line[key] for line in lines["ddp"]] == pytest.approx([line[key] for line in lines["single"]], rel=1e-4), key


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
