"""Training-step speed of the mini unified MLLM: what each lever buys, where the time goes, and MFU.

One optimizer step of ``stage: mllm`` as ``semhitok train`` runs it (forward over the joint
vocabulary at the labelled positions, backward, clip, AdamW) on SmolLM2-135M-Instruct + LoRA r16 +
Dual-MLP + image head around the shipped ``mini-semhitok``, on real samples: the shipped colour
Fashion-MNIST slice's training images (tokenized once), their captions, half understanding and
half generation samples.

Settings, each built on the one before, timed interleaved (every round runs each once, the order
reversed every other round, so load from other processes hits all alike):

- ``shipped``: the recipe ``mini-mllm`` was trained with: SmolLM2's chat template with its default
  system prompt (~30 tokens a sample), 8 samples a step, the chunked loss on the concatenated
  text + image logits with every chunk's logits recomputed in backward;
- ``logits kept, in parts``: the loss as it is now (the normaliser combined from the text and image
  parts, no concatenated copy; the logits kept for backward while they are under 1 GiB);
- ``empty system prompt``: ``mllm.system_prompt: ""`` (the chat turn markers stay);
- ``batch 16`` and ``batch 32``: more samples a step (time per sample compared);
- ``compiled``: ``torch.compile`` of each decoder layer (``--compile``; compile time not timed).

Reported per setting: seconds per step and per sample, tokens/s, model FLOPs per step (counted with
``torch.utils.flop_counter`` on one step: what the step's matmuls do, the recomputed logits
included where they are recomputed), achieved FLOP/s, and MFU against the best n x n matmul of the
same dtype measured in the same run (fp32, and bf16 where the device has it natively). The
breakdown splits the last setting's step into data (collate), input embedding (adapter and text
table, forward + backward), LLM body (forward + backward), joint head + loss (forward + backward)
and optimizer (clip + AdamW), each timed on its own.

Usage::

    python benchmarks/mllm_train.py --json mllm-train.json --markdown mllm-train.md    # CPU, ~10 min
    python benchmarks/mllm_train.py --device cuda --precision bf16 --compile
    SEMHITOK_BENCH_TOY=1 python benchmarks/mllm_train.py --rounds 1                    # a smoke test
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import measure
from measure import count_flops, matmul_peak, sync
import torch

TOY = os.environ.get("SEMHITOK_BENCH_TOY", "") not in ("", "0")
SLICE = Path(__file__).resolve().parents[1] / "src" / "semhitok" / "assets" / "colour-fashion-mnist-mini"
QUESTION = "What is in the image?"


@dataclass(frozen=True)
class Setting:
    name: str
    batch: int = 8
    system_prompt: str | None = None  # None: the chat template's default
    old_loss: bool = True  # concatenated logits, recomputed in backward
    compiled: bool = False


def settings(compile_layers: bool) -> list[Setting]:
    shipped = Setting("shipped")
    kept = replace(shipped, name="logits kept, in parts", old_loss=False)
    short = replace(kept, name="empty system prompt", system_prompt="")
    out = [shipped, kept, short, replace(short, name="batch 16", batch=16), replace(short, name="batch 32", batch=32)]
    if compile_layers:
        out.append(replace(short, name="batch 16, compiled", batch=16, compiled=True))
    return out


# ---- the model and the data -------------------------------------------------------------------------
def build(device: torch.device):
    """(mm, description): SmolLM2-135M + LoRA r16 + Dual-MLP around mini-semhitok, in train mode."""
    from semhitok.mllm import MLLMConfig, SemHiTokMLLM

    config = MLLMConfig(adapter="dual", train="lora", lora_rank=16, lora_alpha=32.0, loss_chunk=256)
    torch.manual_seed(0)
    if TOY:
        from generation import LLMS, byte_tokenizer  # beside this script
        from transformers import LlamaConfig, LlamaForCausalLM

        text_tok = byte_tokenizer()
        llm = LlamaForCausalLM(LlamaConfig(**{**LLMS["tiny"], "vocab_size": len(text_tok)}))
        mm = SemHiTokMLLM.from_llm(llm, "mini-semhitok", text_tok, config)
        what = "tiny random Llama (toy sizes: the numbers mean nothing)"
    else:
        mm = SemHiTokMLLM.from_llm("smollm2-135m", "mini-semhitok", config=config)
        what = "SmolLM2-135M-Instruct (semhitok.llm) + LoRA r16 + Dual-MLP, mini-semhitok (K=1024, m=8, 8x8)"
    return mm.to(device).train(), what


def samples(mm) -> list[tuple[str, torch.Tensor, str]]:
    """(kind, image ids, caption) of the shipped slice's training images, half of each kind."""
    from semhitok.data.colour_fashion import load_split

    split = load_split(SLICE, "train", limit=64)
    with torch.no_grad():
        ids = mm.tokenizer.encode(split.float_images().to(next(mm.adapter.parameters()).device)).ids.cpu()
    return [("generation" if i % 2 else "understanding", ids[i], caption) for i, caption in enumerate(split.captions)]


def examples(data: list[tuple[str, torch.Tensor, str]], start: int, n: int):
    from semhitok.mllm import MLLMExample

    out = []
    for i in range(start, start + n):
        kind, ids, caption = data[i % len(data)]
        if kind == "generation":
            out.append(MLLMExample("generation", caption, image_ids=ids, key=i))
        else:
            out.append(MLLMExample("understanding", QUESTION, image_ids=ids, answer=caption, key=i))
    return out


# ---- one step, whole and in parts --------------------------------------------------------------------
class Stepper:
    """One setting's optimizer step on a fixed batch (the same samples every time)."""

    def __init__(self, mm, setting: Setting, data, device: torch.device, precision) -> None:
        from semhitok.mllm import MLLMCollator
        from semhitok.mllm.sequences import SequenceFormat

        self.mm, self.setting, self.device, self.precision = mm, setting, device, precision
        self.format = SequenceFormat(mm.text_tokenizer, mm.ids, True, setting.system_prompt)
        self.collator = MLLMCollator(self.format, uncond_prob=0.1, seed=0)
        self.raw = examples(data, 0, setting.batch)
        self.batch = self.collator(self.raw).to(device)
        self.params = [p for _, p in mm.trainable_parameters()]
        self.optimizer = torch.optim.AdamW(self.params, lr=1e-5, betas=(0.9, 0.95))
        self.compiled: list[Any] | None = None  # each decoder layer's compiled call, once built

    def __enter__(self) -> Stepper:
        self._saved_format, self.mm.format = self.mm.format, self.format
        if self.setting.compiled:  # nn.Module.compile: in place, same parameters
            for i, layer in enumerate(self.mm.llm.base_model.layers):
                if self.compiled is None:
                    layer.compile(dynamic=False)
                else:
                    layer._compiled_call_impl = self.compiled[i]
        return self

    def __exit__(self, *exc: object) -> None:
        self.mm.format = self._saved_format
        if self.setting.compiled:
            self.compiled = [layer._compiled_call_impl for layer in self.mm.llm.base_model.layers]
            for layer in self.mm.llm.base_model.layers:
                layer._compiled_call_impl = None

    @property
    def tokens(self) -> int:
        return int(self.batch.attention_mask.sum())

    def loss(self, hidden: torch.Tensor) -> torch.Tensor:
        from semhitok.mllm import loss as loss_module

        mm, labels = self.mm, self.batch.labels
        if not self.setting.old_loss:
            return loss_module.labelled_loss(hidden, labels, mm.joint_logit_parts, mm.ids.text_vocab, mm.config.loss_chunk).nll_sum
        keep = loss_module.KEEP_LOGITS_BYTES
        loss_module.KEEP_LOGITS_BYTES = 0  # as shipped: every chunk recomputed
        try:
            return loss_module.labelled_loss(hidden, labels, mm.joint_logits, mm.ids.text_vocab, mm.config.loss_chunk).nll_sum
        finally:
            loss_module.KEEP_LOGITS_BYTES = keep

    def step(self) -> None:
        from semhitok.mllm.sampling import positions

        b = self.batch
        self.optimizer.zero_grad(set_to_none=True)
        with self.precision.autocast(self.device):
            hidden = self.mm.hidden_states(self.mm.embed(b.input_ids), b.attention_mask, positions(b.attention_mask))
            nll = self.loss(hidden)
        (nll / max(1, int((b.labels[:, 1:] != -100).sum()))).backward()
        torch.nn.utils.clip_grad_norm_(self.params, 1.0)
        self.optimizer.step()

    def parts(self) -> dict[str, Callable[[], object]]:
        """The step cut in five, each runnable alone (inputs of the later parts precomputed)."""
        from semhitok.mllm.sampling import positions

        mm, b, autocast = self.mm, self.batch, self.precision.autocast
        pos = positions(b.attention_mask)
        with torch.no_grad(), autocast(self.device):
            embeds = mm.embed(b.input_ids)
            hidden = mm.hidden_states(embeds, b.attention_mask, pos)
        grad_hidden = torch.randn_like(hidden) * 1e-3

        def data() -> object:
            return self.collator(self.raw)

        def embed() -> object:
            with autocast(self.device):
                out = mm.embed(b.input_ids)
            out.float().sum().backward()
            return out

        def body() -> object:
            x = embeds.detach().requires_grad_()
            with autocast(self.device):
                out = mm.hidden_states(x, b.attention_mask, pos)
            out.backward(grad_hidden.to(out.dtype))
            return out

        def head() -> object:
            h = hidden.detach().requires_grad_()
            with autocast(self.device):
                nll = self.loss(h)
            nll.backward()
            return nll

        def optimizer() -> object:
            for p in self.params:
                if p.grad is None:
                    p.grad = torch.zeros_like(p)
            torch.nn.utils.clip_grad_norm_(self.params, 1.0)
            self.optimizer.step()
            return None

        return {"data (collate)": data, "input embedding (adapter)": embed, "LLM body": body, "joint head + loss": head, "optimizer": optimizer}


# ---- measuring ---------------------------------------------------------------------------------------
def timed(fn: Callable[[], object], device: torch.device) -> float:
    sync(device)
    t = time.perf_counter()
    fn()
    sync(device)
    return time.perf_counter() - t


def run(args: argparse.Namespace, log: Callable[[str], None]) -> dict[str, Any]:
    from semhitok.precision import native_bf16, resolve_precision

    device = torch.device(args.device)
    precision = resolve_precision(args.precision, device)
    mm, what = build(device)
    data = samples(mm)
    steppers = [Stepper(mm, s, data, device, precision) for s in settings(args.compile)]
    peaks = {"fp32": matmul_peak(torch.float32, device, toy=TOY)}
    if native_bf16(device):
        peaks["bf16"] = matmul_peak(torch.bfloat16, device, toy=TOY)
    peak = peaks["bf16" if precision.name == "bf16" else "fp32"]
    log(f"{what}; precision {precision.name}; matmul peak " + ", ".join(f"{k} {v / 1e9:.0f} GFLOP/s" for k, v in peaks.items()))

    flops, times = {}, {s.setting.name: [] for s in steppers}
    for s in steppers:
        eager = replace(s.setting, compiled=False)
        with Stepper(mm, eager, data, device, precision) as counted:  # the same math, eagerly
            flops[s.setting.name] = count_flops(counted.step)
        with s:
            for _ in range(args.warmup):
                s.step()  # warm-up (and compilation)
    for r in range(args.rounds):
        for s in (steppers if r % 2 == 0 else steppers[::-1]):
            with s:
                times[s.setting.name].append(timed(s.step, device))
        log(f"round {r + 1}/{args.rounds}: " + ", ".join(f"{k} {v[-1]:.2f}s" for k, v in times.items()))

    rows = []
    base = statistics.median(times[steppers[0].setting.name]) / steppers[0].setting.batch
    for s in steppers:
        t = statistics.median(times[s.setting.name])
        f = flops[s.setting.name]
        rows.append({
            "setting": s.setting.name, "batch": s.setting.batch, "tokens": s.tokens, "median_s": t, "min_s": min(times[s.setting.name]),
            "max_s": max(times[s.setting.name]), "s_per_sample": t / s.setting.batch, "tokens_per_s": s.tokens / t,
            "gflop_per_step": f / 1e9, "gflop_per_s": f / t / 1e9, "mfu": f / t / peak, "speedup_per_sample": base / (t / s.setting.batch),
        })

    last = steppers[-1] if not args.compile else steppers[-2]  # the breakdown runs eagerly
    breakdown = {}
    with last:
        parts = last.parts()
        for name, fn in parts.items():
            fn()
            part_times = [timed(fn, device) for _ in range(args.rounds)]
            f = count_flops(fn)
            t = statistics.median(part_times)
            breakdown[name] = {"median_s": t, "gflop": f / 1e9, "gflop_per_s": f / t / 1e9 if t else 0.0, "mfu": f / t / peak if t else 0.0}
        whole = statistics.median(times[last.setting.name])
        breakdown["(whole step)"] = {"median_s": whole, "gflop": flops[last.setting.name] / 1e9, "gflop_per_s": flops[last.setting.name] / whole / 1e9,
                                     "mfu": flops[last.setting.name] / whole / peak}
    import transformers

    return {"machine": measure.machine_info(device, transformers=transformers.__version__, native_bf16=native_bf16(device)), "model": what,
            "precision": precision.name, "peaks_gflop_per_s": {k: v / 1e9 for k, v in peaks.items()}, "rows": rows,
            "breakdown_setting": last.setting.name, "breakdown": breakdown, "rounds": args.rounds, "loadavg": list(os.getloadavg())}


def markdown(res: dict[str, Any]) -> str:
    m = res["machine"]
    out = [f"Machine: {m['cpu']} ({m['cpu_count']} CPUs, {m['torch_threads']} torch threads{', ' + m['gpu'] if 'gpu' in m else ''}); "
           f"torch {m['torch']}, transformers {m['transformers']}; precision {res['precision']}; matmul peak "
           + ", ".join(f"{k} {v:.0f} GFLOP/s" for k, v in res["peaks_gflop_per_s"].items()) + f"; {res['rounds']} rounds.", "",
           "| setting | samples/step | tokens/step | s/step (median, min-max) | s/sample | tokens/s | GFLOP/step | GFLOP/s | MFU | per-sample speed-up |",
           "|---|---|---|---|---|---|---|---|---|---|"]
    for r in res["rows"]:
        out.append(f"| {r['setting']} | {r['batch']} | {r['tokens']} | {r['median_s']:.2f} ({r['min_s']:.2f}-{r['max_s']:.2f}) | {r['s_per_sample']:.3f} | "
                   f"{r['tokens_per_s']:.0f} | {r['gflop_per_step']:.0f} | {r['gflop_per_s']:.0f} | {r['mfu']:.0%} | {r['speedup_per_sample']:.2f}x |")
    out += ["", f"Breakdown of one step of `{res['breakdown_setting']}` (each part timed alone):", "",
            "| part | s (median) | share of the step | GFLOP | GFLOP/s | MFU |", "|---|---|---|---|---|---|"]
    whole = res["breakdown"]["(whole step)"]["median_s"]
    for name, b in res["breakdown"].items():
        out.append(f"| {name} | {b['median_s']:.3f} | {b['median_s'] / whole:.0%} | {b['gflop']:.1f} | {b['gflop_per_s']:.0f} | {b['mfu']:.0%} |")
    return "\n".join(out) + "\n"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--device", default="cpu", help="cpu or cuda (default cpu)")
    ap.add_argument("--precision", default="auto", choices=["auto", "fp32", "bf16"], help="autocast (auto: bf16 where native)")
    ap.add_argument("--rounds", type=int, default=5, help="timed steps per setting (default 5)")
    ap.add_argument("--warmup", type=int, default=1, help="untimed steps per setting first (default 1)")
    ap.add_argument("--compile", action="store_true", help="also time torch.compile'd decoder layers")
    ap.add_argument("--json", type=Path, help="write the results here")
    ap.add_argument("--markdown", type=Path, help="write the tables here")
    args = ap.parse_args(argv)
    if args.rounds < 1 or args.warmup < 0:
        ap.error("--rounds must be >= 1 and --warmup >= 0")
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        ap.error("--device cuda: no CUDA device here")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")

    def log(msg: str) -> None:
        print(msg, file=sys.stderr, flush=True)

    res = run(args, log)
    text = markdown(res)
    print(text)
    if args.json:
        args.json.write_text(json.dumps(res, indent=2) + "\n")
    if args.markdown:
        args.markdown.write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
