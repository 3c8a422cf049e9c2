"""Speed and memory of the semhitok quantizers, measured against a peer in the same run.

A. ``EMAVectorQuantizer(16384, 48, decay=0.99)`` against ``vector_quantize_pytorch.VectorQuantize``
   (EMA, same settings), on the same input and the *same* initial codebook, in train mode (forward
   including the EMA update) and eval mode (forward only); plus a check of the ids against the peer
   and against a float64 brute-force search.
B. ``HierarchicalQuantizer(16384, 12, 32)`` (SGHC: search restricted to the parent's m codes)
   against a flat search over all K*m normalized codes (cost comparison only: the flat search is
   unrestricted and returns different ids).
C. ``nearest_code`` against the previous implementation of it (chunked addmm + argmin), N=K=16384.

Usage::

    python benchmarks/quantizers.py                      # all parts, ~3-5 min on 2 CPU cores
    python benchmarks/quantizers.py --repeats 3 --json results.json
    python benchmarks/quantizers.py --parts A            # only the peer comparison
    SEMHITOK_BENCH_TOY=1 python benchmarks/quantizers.py --repeats 1   # toy sizes: a smoke test

Wall time: median (and min) over ``--repeats`` forwards after ``--warmup`` forwards, ours and the
peer interleaved (alternating order) so that load from other processes hits both alike; every
forward starts from the same codebook state. Peak memory: each measured configuration runs in a
fresh child process (see ``measure_peak``), reported as the peak RSS increase over the RSS just
before the forward. See benchmarks/BENCHMARKS.md for the method and the recorded numbers.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from importlib import metadata
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor

import measure
from measure import PeakRSS
from semhitok.quantizers import EMAVectorQuantizer, HierarchicalQuantizer, nearest_code

# Part A / B / C sizes (the paper's defaults: K=16384, d_s=48, m=12; a 16x16 grid, batch 64).
# SEMHITOK_BENCH_TOY=1 shrinks them so the whole script runs in seconds: the test suite's smoke
# test of this file (the numbers it prints then mean nothing). Read from the environment so the
# memory-measuring child processes see the same sizes.
TOY = os.environ.get("SEMHITOK_BENCH_TOY", "") == "1"
BATCH, SEQ = (2, 16) if TOY else (64, 256)
K, D_SEM = (64, 8) if TOY else (16384, 48)
M, D_PIX = (4, 8) if TOY else (12, 32)
DECAY, BETA = 0.99, 0.25
FLAT_CHUNK_ROWS = 64  # rows per chunk of the flat search: 64 x 196,608 fp32 distances = 48 MiB
TIE_RTOL = 1e-5

MIB = 1024 * 1024

# The peer version BENCHMARKS.md was measured with, and the one the `bench` extra pins. Other
# versions start from other initial EMA statistics (1.34 starts N_k = S_k = 0) and run other code,
# so their numbers would not be comparable: the script refuses them in one line.
PEER = "vector-quantize-pytorch"
PEER_VERSION = "1.32.0"


# --------------------------------------------------------------------------------------------
# memory measurement


# --------------------------------------------------------------------------------------------
# the contenders


def peer_problem() -> str | None:
    """Why the installed peer cannot be measured (one line), or None."""
    try:
        found = metadata.version(PEER)
    except metadata.PackageNotFoundError:
        return f"{PEER} is not installed; install the measured version: pip install {PEER}=={PEER_VERSION}"
    if found != PEER_VERSION:
        return f"{PEER} {found} is installed, but this benchmark is measured with {PEER_VERSION}; pip install {PEER}=={PEER_VERSION}"
    return None


def make_peer():
    from vector_quantize_pytorch import VectorQuantize

    peer = VectorQuantize(dim=D_SEM, codebook_size=K, decay=DECAY, commitment_weight=BETA)
    cb = peer._codebook
    # The comparison needs the peer's plain (random, kaiming-uniform) initial codebook: no k-means,
    # no dead-code restarts, EMA on, and EMA statistics that start at (N_k = 1, S_k = c_k) like ours.
    assert not cb.has_dead_code_replacement and cb.ema_update and bool(cb.initted)
    assert cb.embed.shape == (1, K, D_SEM) and cb.embed.abs().sum() > 0
    assert torch.equal(cb.embed_avg, cb.embed) and torch.equal(cb.cluster_size, torch.ones(1, K))
    return peer


def make_ours(codebook: Tensor) -> EMAVectorQuantizer:
    ours = EMAVectorQuantizer(codebook_size=K, dim=D_SEM, decay=DECAY, commitment_weight=BETA)
    with torch.no_grad():
        ours.embed.copy_(codebook)
        ours.embed_sum.copy_(codebook)
        ours.cluster_size.fill_(1.0)
    return ours


def load_peer(codebook: Tensor):
    peer = make_peer()
    with torch.no_grad():
        peer._codebook.embed.copy_(codebook[None])
        peer._codebook.embed_avg.copy_(codebook[None])
        peer._codebook.cluster_size.fill_(1.0)
    return peer


class Runner:
    """One forward of one contender from a fixed starting state (the reset is not timed)."""

    def __init__(self, name: str, module: torch.nn.Module, call, train: bool, no_grad: bool = False):
        self.name, self.module, self.call, self.no_grad = name, module, call, no_grad
        module.train(train)
        self.state = {k: v.clone() for k, v in module.state_dict().items()}

    def reset(self) -> None:
        self.module.load_state_dict(self.state)

    def __call__(self):
        if self.no_grad:
            with torch.no_grad():
                return self.call(self.module)
        return self.call(self.module)


def ours_call(x: Tensor):
    return lambda m: m(x)


def peer_call(x: Tensor):
    return lambda m: m(x)  # (quantize, ids, loss)


def sghc_call(p: Tensor, parents: Tensor):
    return lambda m: m(p, parents)


def flat_search(p: Tensor, weight: Tensor) -> Tensor:
    """What SGHC avoids: nearest by cosine over all K*m normalized codes (flat ids in [0, K*m))."""
    z = F.normalize(p.reshape(-1, p.shape[-1]).float(), dim=-1)
    codes = F.normalize(weight.float(), dim=-1).reshape(-1, weight.shape[-1])
    # On unit vectors the L2-nearest code is the cosine-nearest one; nearest_code is the exact,
    # chunked search (a single N x K*m matrix would need 12 GiB here).
    return nearest_code(z, codes, chunk_size=FLAT_CHUNK_ROWS)


def flat_call(p: Tensor):
    return lambda m: flat_search(p, m.weight)


def previous_nearest_code(z: Tensor, codebook: Tensor, chunk_size: int | None = None) -> Tensor:
    """The implementation of semhitok.quantizers.nearest_code before this benchmark (commit 5ac6035)."""
    n, k = z.shape[0], codebook.shape[0]
    if chunk_size is None:
        chunk_size = max(1, 2**19 // max(k, 1))
    c_sq = codebook.pow(2).sum(dim=-1)
    codebook_t = codebook.t()
    ids = torch.empty(n, dtype=torch.long, device=z.device)
    for start in range(0, n, chunk_size):
        end = min(start + chunk_size, n)
        dist = torch.addmm(c_sq, z[start:end], codebook_t, beta=1.0, alpha=-2.0)
        ids[start:end] = dist.argmin(dim=-1)
    return ids


# --------------------------------------------------------------------------------------------
# data shared by the parent and the memory children


def make_data(seed: int) -> dict[str, Tensor]:
    g = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    peer = make_peer()  # its own random initial codebook, the one both quantizers start from
    hq = HierarchicalQuantizer(num_parents=K, subcodebook_size=M, dim=D_PIX)
    return {
        "codebook": peer._codebook.embed[0].detach().clone(),
        "x": torch.randn(BATCH, SEQ, D_SEM, generator=g),
        "p": torch.randn(BATCH, SEQ, D_PIX, generator=g),
        "parents": torch.randint(0, K, (BATCH, SEQ), generator=g),
        "hq_weight": hq.weight.detach().clone(),
        "nz": torch.randn(K, D_SEM, generator=g),
        "nc": torch.randn(K, D_SEM, generator=g),
    }


def make_runner(role: str, data: dict[str, Tensor]) -> Runner:
    x, codebook = data["x"], data["codebook"]
    if role in ("ours-train", "ours-eval"):
        return Runner("ours", make_ours(codebook), ours_call(x), train=role.endswith("train"))
    if role in ("peer-train", "peer-eval"):
        return Runner("peer", load_peer(codebook), peer_call(x), train=role.endswith("train"))
    if role in ("sghc", "flat"):
        hq = HierarchicalQuantizer(num_parents=K, subcodebook_size=M, dim=D_PIX)
        with torch.no_grad():
            hq.weight.copy_(data["hq_weight"])
        call = sghc_call(data["p"], data["parents"]) if role == "sghc" else flat_call(data["p"])
        return Runner(role, hq, call, train=False, no_grad=True)
    raise ValueError(role)


def child_main(role: str, data_path: str, runs: int) -> None:
    """Memory child: one warm-up forward, then ``runs`` measured ones; one JSON line on stdout."""
    data = torch.load(data_path, weights_only=True)
    runner = make_runner(role, data)
    runner.reset()
    out = runner()  # warm-up: one-time allocations (thread pools, BLAS buffers) are not counted
    del out
    peaks, hwms, sampled, times = [], [], [], []
    for _ in range(runs):
        runner.reset()
        with PeakRSS() as m:
            t0 = time.perf_counter()
            out = runner()
            times.append(time.perf_counter() - t0)
        del out
        peaks.append(m.peak)
        hwms.append(m.hwm)
        sampled.append(m.sampled)
    print(json.dumps({"role": role, "peak_bytes": max(peaks), "peaks": peaks, "hwm": hwms, "sampled": sampled,
                      "hwm_used": m.hwm_ok, "times": times}))


def measure_peak(role: str, data_path: str, runs: int, threads: int) -> dict:
    """Run the memory child for ``role`` in a fresh process.

    The child runs with a fixed glibc mmap threshold (64 KiB), which also switches off glibc's
    dynamic threshold: every buffer of 64 KiB or more is its own mmap and goes back to the kernel
    on free, so RSS follows the live allocations and memory kept from an earlier call cannot hide
    part of a forward's footprint. Applied to ours and the peer alike.
    """
    env = dict(os.environ, MALLOC_MMAP_THRESHOLD_="65536", MALLOC_TRIM_THRESHOLD_="131072")
    cmd = [sys.executable, __file__, "--_child", role, "--_data", data_path, "--_runs", str(runs),
           "--threads", str(threads)]
    res = subprocess.run(cmd, env=env, capture_output=True, text=True, check=False)
    if res.returncode != 0:
        raise RuntimeError(f"memory child {role} failed:\n{res.stderr[-3000:]}")
    return json.loads(res.stdout.strip().splitlines()[-1])


# --------------------------------------------------------------------------------------------
# timing


def time_interleaved(runners: list, warmup: int, repeats: dict[str, int]) -> tuple[dict, dict]:
    """Time each runner ``warmup + repeats[name]`` times, alternating the order every round.

    Returns (times in s per runner name, output of each runner's first call).
    """
    times: dict[str, list[float]] = {r.name: [] for r in runners}
    first: dict[str, object] = {}
    rounds = warmup + max(repeats.values())
    for i in range(rounds):
        order = runners if i % 2 == 0 else runners[::-1]
        for r in order:
            if i >= warmup + repeats[r.name]:
                continue
            r.reset()
            gc.collect()
            t0 = time.perf_counter()
            out = r()
            dt = time.perf_counter() - t0
            if r.name not in first:
                first[r.name] = out
                r.first_state = {k: v.clone() for k, v in r.module.state_dict().items()}
            if i >= warmup:
                times[r.name].append(dt)
            del out
    return times, first


def summary(ts: list[float]) -> dict:
    return {"median_s": statistics.median(ts), "min_s": min(ts), "runs_s": ts}


# --------------------------------------------------------------------------------------------
# checks


def tie_check(x: Tensor, codebook: Tensor, ours: Tensor, peer: Tensor) -> dict:
    """Compare two id assignments with each other and with a float64 brute-force search."""
    x64, c64 = x.double(), codebook.double()
    c_sq = c64.pow(2).sum(-1)
    n = x64.shape[0]
    exact = torch.empty(n, dtype=torch.long)
    d_min = torch.empty(n, dtype=torch.float64)
    d_ours = torch.empty(n, dtype=torch.float64)
    d_peer = torch.empty(n, dtype=torch.float64)
    for s in range(0, n, 256):
        e = min(s + 256, n)
        dist = x64[s:e].pow(2).sum(-1, keepdim=True) + c_sq - 2.0 * x64[s:e] @ c64.t()  # squared L2
        d_min[s:e], exact[s:e] = dist.min(dim=-1)
        rows = torch.arange(e - s)
        d_ours[s:e] = dist[rows, ours[s:e]]
        d_peer[s:e] = dist[rows, peer[s:e]]
    differ = ours != peer
    scale = d_min.clamp_min(1e-30)

    def gap(a: Tensor, b: Tensor, mask: Tensor) -> float:
        return float(((a - b).abs() / scale)[mask].max()) if bool(mask.any()) else 0.0

    ours_wrong = ours != exact
    peer_wrong = peer != exact
    res = {
        "n_tokens": n,
        "ids_differ_ours_vs_peer": int(differ.sum()),
        "max_rel_gap_where_differ": gap(d_ours, d_peer, differ),
        "ours_differ_from_fp64_argmin": int(ours_wrong.sum()),
        "ours_max_rel_excess_over_fp64_min": gap(d_ours, d_min, ours_wrong),
        "peer_differ_from_fp64_argmin": int(peer_wrong.sum()),
        "peer_max_rel_excess_over_fp64_min": gap(d_peer, d_min, peer_wrong),
        "tie_rtol": TIE_RTOL,
    }
    res["all_differences_are_near_ties"] = all(
        res[k] <= TIE_RTOL for k in ("max_rel_gap_where_differ", "ours_max_rel_excess_over_fp64_min",
                                     "peer_max_rel_excess_over_fp64_min"))
    return res


# --------------------------------------------------------------------------------------------
# parts


def part_a(data, data_path, args, log) -> dict:
    x, codebook = data["x"], data["codebook"]
    res: dict = {"config": {"codebook_size": K, "dim": D_SEM, "decay": DECAY, "commitment_weight": BETA,
                            "input_shape": list(x.shape), "n_tokens": x.shape[0] * x.shape[1]}}
    for mode in ("train", "eval"):
        ours = make_runner(f"ours-{mode}", data)
        peer = make_runner(f"peer-{mode}", data)
        times, first = time_interleaved([ours, peer], args.warmup, {"ours": args.repeats, "peer": args.repeats})
        r = {"ours": summary(times["ours"]), "peer": summary(times["peer"])}
        o_out, p_out = first["ours"], first["peer"]
        o_ids, p_ids = o_out.ids.reshape(-1), p_out[1].reshape(-1)
        r["ids_differ_first_forward"] = int((o_ids != p_ids).sum())
        if mode == "train":
            # Both first forwards started from the shared initial state: compare the losses and the
            # codebooks after that one EMA step.
            # A token whose id differs (a near-tie) moves its contribution between two codes, so those
            # codes are compared apart from the rest.
            r["loss_ours"], r["loss_peer"] = float(o_out.loss.detach()), float(p_out[2].detach())
            o_cb, p_cb = ours.first_state["embed"], peer.first_state["_codebook.embed"][0]
            differ = o_ids != p_ids
            touched = torch.zeros(K, dtype=torch.bool)
            touched[o_ids[differ]] = True
            touched[p_ids[differ]] = True
            diff = (o_cb - p_cb).abs().amax(dim=-1)
            r["codes_touched_by_differing_ids"] = int(touched.sum())
            r["codebook_after_step_max_abs_diff_other_codes"] = float(diff[~touched].max())
            r["codebook_after_step_max_abs_diff_touched_codes"] = float(diff[touched].max()) if bool(touched.any()) else 0.0
            r["codebook_max_abs"] = float(o_cb.abs().max())
        else:
            r["tie_check"] = tie_check(x.reshape(-1, D_SEM), codebook, o_ids, p_ids)
            # The peer's default initial codebook is tiny (kaiming-uniform, |c| < 0.003) next to
            # unit-variance inputs, so every distance is about ||x||^2 and relative gaps are small;
            # the same check on a codebook at the inputs' scale is the sharper test.
            unit = torch.randn(K, D_SEM, generator=torch.Generator().manual_seed(args.seed + 1))
            with torch.no_grad():
                u_ours = make_ours(unit).eval()(x).ids.reshape(-1)
                u_peer = load_peer(unit).eval()(x)[1].reshape(-1)
            r["tie_check_unit_codebook"] = tie_check(x.reshape(-1, D_SEM), unit, u_ours, u_peer)
        del ours, peer, first, o_out, p_out
        gc.collect()
        if not args.no_memory:
            for who in ("ours", "peer"):
                m = measure_peak(f"{who}-{mode}", data_path, args.memory_runs, torch.get_num_threads())
                r[who]["peak_rss_increase_bytes"] = m["peak_bytes"]
                r[who]["memory_child"] = m
            r["ratio_memory_ours_over_peer"] = r["ours"]["peak_rss_increase_bytes"] / r["peer"]["peak_rss_increase_bytes"]
        r["ratio_time_peer_over_ours"] = r["peer"]["median_s"] / r["ours"]["median_s"]
        res[mode] = r
        log(f"  A/{mode} done")
    return res


def part_b(data, data_path, args, log) -> dict:
    sghc = make_runner("sghc", data)
    flat = make_runner("flat", data)
    times, first = time_interleaved([sghc, flat], args.warmup, {"sghc": args.repeats, "flat": args.repeats_flat})
    r: dict = {"config": {"num_parents": K, "subcodebook_size": M, "dim": D_PIX, "flat_codes": K * M,
                          "input_shape": list(data["p"].shape), "flat_chunk_rows": FLAT_CHUNK_ROWS},
               "sghc": summary(times["sghc"]), "flat": summary(times["flat"])}
    flat_ids = first["flat"]
    parents = data["parents"].reshape(-1)
    r["flat_ids_inside_given_parent"] = int((flat_ids // M == parents).sum())
    r["n_tokens"] = int(parents.numel())
    if not args.no_memory:
        for who in ("sghc", "flat"):
            m = measure_peak(who, data_path, args.memory_runs, torch.get_num_threads())
            r[who]["peak_rss_increase_bytes"] = m["peak_bytes"]
            r[who]["memory_child"] = m
        r["ratio_memory_sghc_over_flat"] = r["sghc"]["peak_rss_increase_bytes"] / r["flat"]["peak_rss_increase_bytes"]
    r["ratio_time_flat_over_sghc"] = r["flat"]["median_s"] / r["sghc"]["median_s"]
    log("  B done")
    return r


def part_c(data, args, log) -> dict:
    z, c = data["nz"], data["nc"]

    class Fn(torch.nn.Module):
        def __init__(self, fn):
            super().__init__()
            self.fn = fn

    new = Runner("current", Fn(nearest_code), lambda m: m.fn(z, c), train=False, no_grad=True)
    old = Runner("previous", Fn(previous_nearest_code), lambda m: m.fn(z, c), train=False, no_grad=True)
    times, first = time_interleaved([new, old], args.warmup, {"current": args.repeats, "previous": args.repeats})
    r = {"config": {"n": z.shape[0], "k": c.shape[0], "dim": z.shape[1]},
         "current": summary(times["current"]), "previous": summary(times["previous"]),
         "ids_differ": int((first["current"] != first["previous"]).sum())}
    r["speedup_previous_over_current"] = r["previous"]["median_s"] / r["current"]["median_s"]
    log("  C done")
    return r


# --------------------------------------------------------------------------------------------
# report


def machine_info() -> dict:
    try:
        peer_version = metadata.version("vector-quantize-pytorch")
    except metadata.PackageNotFoundError:
        peer_version = None
    return measure.machine_info(vector_quantize_pytorch=peer_version, platform=platform.platform())


def fmt_mib(b) -> str:
    return "-" if b is None else f"{b / MIB:9.1f}"


def print_report(res: dict) -> None:
    mi = res["machine"]
    print()
    print(f"machine: {mi['cpu']}, {mi['cpu_count']} CPUs, torch {mi['torch']} ({mi['torch_threads']} threads), "
          f"vector-quantize-pytorch {mi['vector_quantize_pytorch']}")
    print(f"load average at start / end: {res['loadavg_start']} / {res['loadavg_end']}")
    hdr = f"{'':30s}{'median s':>10s}{'min s':>9s}{'peak MiB':>10s}"
    if "A" in res:
        a = res["A"]
        cfg = a["config"]
        print(f"\nA. EMA VQ, K={cfg['codebook_size']}, d={cfg['dim']}, x {tuple(cfg['input_shape'])} "
              f"(N={cfg['n_tokens']}), same initial codebook")
        print(hdr)
        for mode in ("train", "eval"):
            r = a[mode]
            for who, label in (("ours", "ours EMAVectorQuantizer"), ("peer", "peer VectorQuantize")):
                s = r[who]
                print(f"{mode:5s} {label:24s}{s['median_s']:10.3f}{s['min_s']:9.3f}"
                      f"{fmt_mib(s.get('peak_rss_increase_bytes')):>10s}")
            mem = r.get("ratio_memory_ours_over_peer")
            print(f"{mode:5s} ratios: time peer/ours = {r['ratio_time_peer_over_ours']:.1f}x"
                  + (f", memory ours/peer = {mem:.4f} (1/{1 / mem:.0f})" if mem else ""))
        tr = a["train"]
        print(f"train, first step from the shared state: ids differ in {tr['ids_differ_first_forward']}; "
              f"loss ours {tr['loss_ours']:.7g} peer {tr['loss_peer']:.7g}; codebooks after the EMA step "
              f"differ by at most {tr['codebook_after_step_max_abs_diff_other_codes']:.2g} on the codes not "
              f"touched by those ids, {tr['codebook_after_step_max_abs_diff_touched_codes']:.2g} on the "
              f"{tr['codes_touched_by_differing_ids']} touched (max |code| {tr['codebook_max_abs']:.3g})")
        for key, what in (("tie_check", "peer's initial codebook"), ("tie_check_unit_codebook", "a randn codebook")):
            t = a["eval"][key]
            print(f"eval ids, {what}: {t['ids_differ_ours_vs_peer']} of {t['n_tokens']} differ between ours "
                  f"and the peer (max rel gap of their fp64 squared distances {t['max_rel_gap_where_differ']:.1e}); "
                  f"vs an fp64 brute force: ours {t['ours_differ_from_fp64_argmin']} differ "
                  f"(max rel excess {t['ours_max_rel_excess_over_fp64_min']:.1e}), peer "
                  f"{t['peer_differ_from_fp64_argmin']} (max rel excess {t['peer_max_rel_excess_over_fp64_min']:.1e}); "
                  f"all near-ties within rtol {TIE_RTOL:g}: {'YES' if t['all_differences_are_near_ties'] else 'NO'}")
        ok_ids = all(a["eval"][k]["all_differences_are_near_ties"] for k in ("tie_check", "tie_check_unit_codebook"))
        tt, tm = a["eval"]["ratio_time_peer_over_ours"], a["eval"].get("ratio_memory_ours_over_peer")
        ok_t = min(a["train"]["ratio_time_peer_over_ours"], tt) >= 10
        ok_m = tm is not None and max(a["train"]["ratio_memory_ours_over_peer"], tm) <= 1 / 8
        print(f"targets (>=10x faster, <=1/8 memory, identical ids up to ties): time {'MET' if ok_t else 'MISSED'}, "
              f"memory {'MET' if ok_m else ('MISSED' if tm is not None else 'not measured')}, ids "
              f"{'MET' if ok_ids else 'MISSED'}")
    if "B" in res:
        b = res["B"]
        cfg = b["config"]
        print(f"\nB. SGHC lookup, K={cfg['num_parents']}, m={cfg['subcodebook_size']}, d={cfg['dim']}, "
              f"p {tuple(cfg['input_shape'])}, eval, no_grad")
        print(hdr)
        for who, label in (("sghc", "HierarchicalQuantizer"), ("flat", f"flat over {cfg['flat_codes']}")):
            s = b[who]
            print(f"      {label:24s}{s['median_s']:10.3f}{s['min_s']:9.3f}"
                  f"{fmt_mib(s.get('peak_rss_increase_bytes')):>10s}")
        mem = b.get("ratio_memory_sghc_over_flat")
        print(f"      ratios: time flat/sghc = {b['ratio_time_flat_over_sghc']:.0f}x"
              + (f", memory sghc/flat = {mem:.3f}" if mem else ""))
        print(f"      (cost comparison only: the flat search is unrestricted; {b['flat_ids_inside_given_parent']} "
              f"of {b['n_tokens']} of its ids fall inside the token's given parent)")
    if "C" in res:
        c = res["C"]
        cfg = c["config"]
        print(f"\nC. nearest_code, N={cfg['n']}, K={cfg['k']}, d={cfg['dim']}")
        print(f"{'':30s}{'median s':>10s}{'min s':>9s}")
        for who in ("current", "previous"):
            s = c[who]
            print(f"      {who:24s}{s['median_s']:10.3f}{s['min_s']:9.3f}")
        print(f"      speedup previous/current = {c['speedup_previous_over_current']:.2f}x, "
              f"ids differ: {c['ids_differ']}")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repeats", type=int, default=5, help="timed forwards per configuration (default 5)")
    ap.add_argument("--warmup", type=int, default=1, help="untimed forwards first (default 1)")
    ap.add_argument("--repeats-flat", type=int, default=3, help="timed forwards of the flat search in B (default 3)")
    ap.add_argument("--memory-runs", type=int, default=1,
                    help="measured forwards per memory child, after one warm-up (default 1)")
    ap.add_argument("--no-memory", action="store_true", help="skip the memory children")
    ap.add_argument("--parts", default="ABC", help="which parts to run, e.g. A or AB (default ABC)")
    ap.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's default)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--json", type=Path, default=None, help="also write the results as JSON here")
    ap.add_argument("--_child", help=argparse.SUPPRESS)
    ap.add_argument("--_data", help=argparse.SUPPRESS)
    ap.add_argument("--_runs", type=int, default=1, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    if args._child:
        child_main(args._child, args._data, args._runs)
        return 0
    if min(args.repeats, args.repeats_flat, args.memory_runs) < 1 or args.warmup < 0:
        ap.error("--repeats, --repeats-flat and --memory-runs must be >= 1, --warmup >= 0")
    parts = set(args.parts.upper())
    if not parts or parts - set("ABC"):
        ap.error("--parts takes letters from A, B, C")
    problem = peer_problem() if "A" in parts else None
    if problem is not None:
        print(f"quantizers.py: {problem}", file=sys.stderr)
        return 2

    def log(msg: str) -> None:
        print(msg, file=sys.stderr, flush=True)

    t_start = time.perf_counter()
    res: dict = {"machine": machine_info(), "loadavg_start": [round(v, 2) for v in os.getloadavg()],
                 "command": " ".join([Path(sys.executable).name, *sys.argv]),
                 "args": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()
                          if not k.startswith("_")}}
    data = make_data(args.seed)
    with tempfile.TemporaryDirectory() as tmp:
        data_path = os.path.join(tmp, "data.pt")
        torch.save(data, data_path)
        if "A" in parts:
            res["A"] = part_a(data, data_path, args, log)
        if "B" in parts:
            res["B"] = part_b(data, data_path, args, log)
        if "C" in parts:
            res["C"] = part_c(data, args, log)
    res["loadavg_end"] = [round(v, 2) for v in os.getloadavg()]
    res["total_s"] = time.perf_counter() - t_start
    print_report(res)
    print(f"\ntotal {res['total_s']:.0f} s")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(res, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
