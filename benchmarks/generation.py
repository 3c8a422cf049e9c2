"""Image generation throughput of the MLLM sampler, against three alternatives in the same run.

For each LLM (a tiny random Llama, and a random Llama of SmolLM2-135M's shape: hidden 576, 30
layers, 9 heads, 3 KV heads, MLP 1536, vocabulary 49,152, tied embeddings; ``--real-smollm2`` loads
the real SmolLM2-135M-Instruct through ``semhitok.llm`` instead) and each image length h*w (256 = a
16x16 grid with paper-256's codebooks K=16384, m=12; 64 = the mini 8x8 grid with mini's K=1024,
m=8), B images are drawn with classifier-free guidance (scale 4, temperature 1) by:

- ``ours``: ``sample_image_ids(..., use_cache=True)``, the conditional and unconditional rows
  batched (2B rows), one cached forward per image token;
- ``recompute`` (a): ``sample_image_ids(..., use_cache=False)``, the whole sequence recomputed at
  every step (target: ours >= 10x faster);
- ``hf_generate`` (b): Hugging Face ``generate(guidance_scale=4)`` on a ``GenerationMixin`` wrapper
  (``JointCausalLM`` below) whose logits are the MLLM's joint text+image logits. HF's CFG is
  ``UnbatchedClassifierFreeGuidanceLogitsProcessor``: the unconditional rows run as a separate
  forward with their own cache, inside the logits processor; a second processor keeps the image
  ids only; ``min_new_tokens = max_new_tokens = h*w`` (target: ours >= 2x faster);
- ``ours_unbatched_cfg`` (c): our sampler's loop with the conditional and the unconditional rows
  as two separate cached forwards per step (``guide``/``draw`` of sampling.py reused): what
  batching the two branches buys.

Reported per method: images/s and image tokens/s (median over ``--repeats`` timed runs after
``--warmup`` untimed ones, all methods interleaved with the order reversed every round, so load from
other processes hits all alike) and peak memory (CPU: the peak RSS increase over one run in a fresh
child process per configuration and method, as benchmarks/quantizers.py measures it; GPU:
``torch.cuda.max_memory_allocated`` over one run). The models have random weights (speed does
not depend on their values; the image head gets random weights so that draws depend on the
context); only the tokenizer's codebooks are used (decoding is not timed).

Correctness guard: for the same seed, greedy (temperature 0) ids of ours must equal those of
recompute; the ids of (c) and of (b) are compared too (HF guides log-softmaxed joint logits, which
differ from our raw image logits by a per-row constant, so the argmax is the same). The check runs
on the first ``--check-tokens`` image tokens (constant guidance: a prefix of the full image).

The recompute baseline is slow at 256 tokens on the 135M model (its cost grows with the square of
the length). It runs ``--recompute-repeats`` times (default 1) after a 2-token warm-up;
``--recompute-tokens N`` instead times it on N and N/2 image tokens and extrapolates to h*w: a run
of n tokens makes n forwards over P, P+1, ..., P+n-1 positions, each costing A' + b*length (the
attention's quadratic term, small beside the matmuls at these lengths, is ignored), so
T(n) = n*A + b*n(n-1)/2 with A and b solved from the two runs. Such numbers are marked
``extrapolated`` in the JSON and the table, and their peak memory is that of the N-token run.

Usage::

    python benchmarks/generation.py --json gen.json --markdown gen.md       # CPU, see BENCHMARKS.md
    python benchmarks/generation.py --llms tiny --tokens 64                 # one configuration
    python benchmarks/generation.py --device cuda --bf16 --json gen-gpu.json
    SEMHITOK_BENCH_TOY=1 python benchmarks/generation.py                    # seconds: a smoke test
"""

from __future__ import annotations

import argparse
import copy
import gc
import json
import math
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

import measure
from measure import PeakRSS, sync

TOY = os.environ.get("SEMHITOK_BENCH_TOY", "") not in ("", "0")
MIB = 1024 * 1024
METHODS = ["ours", "recompute", "hf_generate", "ours_unbatched_cfg"]
CAPTIONS = ["a red ankle boot", "a pullover with long sleeves", "a small leather bag", "a white sneaker on grey",
            "a striped dress", "trousers", "a denim jacket with buttons", "a coat"]
CFG_SCALE = 4.0

# LLM shapes (random weights). SmolLM2-135M's config: hidden 576, 30 layers, 9 heads of 64, 3 KV
# heads, MLP 1536, vocabulary 49152, tied embeddings, RoPE theta 1e5, RMSNorm eps 1e-5.
LLMS: dict[str, dict[str, Any]] = {
    "tiny": dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2, vocab_size=None, tie_word_embeddings=True),
    "smollm2-135m": dict(hidden_size=576, intermediate_size=1536, num_hidden_layers=30, num_attention_heads=9, num_key_value_heads=3, vocab_size=49152,
                         tie_word_embeddings=True, rope_theta=100000.0, rms_norm_eps=1e-5, max_position_embeddings=8192),
}
# Image lengths -> tokenizer codebooks (only these matter to sampling: the adapter's inputs and the
# image head's K*m rows). 256 = paper-256's 16x16 grid and vocabulary; 64 = the mini 8x8 grid.
GRIDS: dict[int, dict[str, int]] = {
    256: dict(grid=16, codebook_size=16384, semantic_dim=48, subcodebook_size=12, pixel_dim=32),
    64: dict(grid=8, codebook_size=1024, semantic_dim=32, subcodebook_size=8, pixel_dim=16),
}
if TOY:  # seconds in all: the smoke test's sizes (the numbers then mean nothing)
    LLMS = {
        "tiny": dict(LLMS["tiny"], hidden_size=32, intermediate_size=64),
        "smollm2-135m": dict(LLMS["smollm2-135m"], hidden_size=96, intermediate_size=192, num_hidden_layers=2, num_attention_heads=3,
                             num_key_value_heads=1, vocab_size=512),
    }
    GRIDS = {16: dict(grid=4, codebook_size=256, semantic_dim=16, subcodebook_size=4, pixel_dim=8),
             4: dict(grid=2, codebook_size=64, semantic_dim=8, subcodebook_size=4, pixel_dim=8)}


# ---- machine --------------------------------------------------------------------------------
def machine_info(device: torch.device) -> dict:
    import transformers

    return measure.machine_info(device, transformers=transformers.__version__)


# ---- models ---------------------------------------------------------------------------------
def byte_tokenizer():
    """Byte-level text tokenizer with a ChatML template (as the MLLM tests use), when SmolLM2's
    own tokenizer is not cached locally."""
    from tokenizers import Tokenizer, decoders, models
    from tokenizers.pre_tokenizers import ByteLevel
    from transformers import PreTrainedTokenizerFast

    alphabet = sorted(ByteLevel.alphabet())
    tk = Tokenizer(models.BPE(vocab={c: i for i, c in enumerate(alphabet)}, merges=[]))
    tk.pre_tokenizer = ByteLevel(add_prefix_space=False)
    tk.decoder = decoders.ByteLevel()
    tok = PreTrainedTokenizerFast(tokenizer_object=tk, bos_token="<|bos|>", eos_token="<|im_end|>", pad_token="<|pad|>",
                                  extra_special_tokens=["<|im_start|>"])
    tok.chat_template = ("{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
                         "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")
    return tok


def text_tokenizer() -> tuple[Any, str]:
    """SmolLM2's tokenizer from semhitok's local cache if present (real prompt lengths), else bytes."""
    if not TOY:
        from semhitok.llm.local import cache_root

        folder = cache_root() / "llm" / "smollm2-135m"
        if (folder / "tokenizer_config.json").is_file():
            from transformers import AutoTokenizer

            return AutoTokenizer.from_pretrained(folder, local_files_only=True), f"SmolLM2 ({folder})"
    return byte_tokenizer(), "byte-level with a ChatML template"


def build_tokenizer(tokens: int):
    """A SemHiTok whose grid gives ``tokens`` image ids, with the codebooks of GRIDS (tiny ViTs)."""
    from semhitok import SemHiTok, SemHiTokConfig

    g = GRIDS[tokens]
    patch = 64 // g["grid"]
    config = SemHiTokConfig.from_preset(
        "tiny", pixel_patch_size=patch, codebook_size=g["codebook_size"], semantic_dim=g["semantic_dim"],
        subcodebook_size=g["subcodebook_size"], pixel_dim=g["pixel_dim"],
        teacher={"hf_config": {"image_size": 64, "patch_size": patch}},
    )
    assert config.num_tokens == tokens, (config.num_tokens, tokens)
    torch.manual_seed(0)
    return SemHiTok(config).eval()


def build_mllm(llm_name: str, tokens: int, device: torch.device, dtype: torch.dtype, real_smollm2: bool = False):
    """(mm, description): an MLLM around the named LLM shape (random weights unless real)."""
    from transformers import LlamaConfig, LlamaForCausalLM

    from semhitok.mllm import MLLMConfig, SemHiTokMLLM

    tokenizer = build_tokenizer(tokens)
    config = MLLMConfig(train="adapter")
    if real_smollm2 and llm_name == "smollm2-135m" and not TOY:
        mm = SemHiTokMLLM.from_llm("smollm2-135m", tokenizer, config=config)
        what = "real SmolLM2-135M-Instruct (semhitok.llm)"
    else:
        text_tok, text_what = text_tokenizer()
        shape = dict(LLMS[llm_name])
        shape["vocab_size"] = max(shape["vocab_size"] or 0, len(text_tok))
        torch.manual_seed(0)
        llm = LlamaForCausalLM(LlamaConfig(**shape)).eval()
        mm = SemHiTokMLLM(llm, tokenizer, text_tok, config)
        what = f"random Llama {shape['hidden_size']}x{shape['num_hidden_layers']} (vocab {shape['vocab_size']}); text tokenizer: {text_what}"
    with torch.no_grad():  # a trained-like head: draws depend on the context (at init all ids tie)
        g = torch.Generator().manual_seed(1)
        w = mm.image_head.weight
        w.copy_(torch.randn(w.shape, generator=g) * (2.0 / math.sqrt(w.shape[1])))
    mm = mm.to(device=device, dtype=dtype).eval()
    return mm, what


def count_params(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


# ---- the contenders -------------------------------------------------------------------------
def prompts(mm, batch: int) -> tuple[list[list[int]], list[list[int]]]:
    captions = [CAPTIONS[i % len(CAPTIONS)] for i in range(batch)]
    return [mm.format.generation_prompt(c) for c in captions], [mm.format.generation_prompt(None)] * batch


def generator(mm, seed: int) -> torch.Generator:
    return torch.Generator(device=mm.image_head.weight.device).manual_seed(seed)


@torch.no_grad()
def run_ours(mm, cond, uncond, n: int, config, seed: int, use_cache: bool = True) -> Tensor:
    from semhitok.mllm.sampling import sample_image_ids

    return sample_image_ids(mm, cond, uncond, n, config, generator(mm, seed), pad_id=mm.pad_id, use_cache=use_cache).ids


@torch.no_grad()
def run_unbatched_cfg(mm, cond, uncond, n: int, config, seed: int) -> Tensor:
    """(c): sample_image_ids' loop with the conditional and the unconditional rows as two separate
    cached forwards per step (each half left-padded on its own, its own KV cache)."""
    from semhitok.mllm.sampling import left_pad, next_ids, positions

    gen = generator(mm, seed)
    device = mm.image_head.weight.device
    b = len(cond)
    halves = []
    for rows in (cond, uncond):
        ids, mask = left_pad(rows, mm.pad_id, device)
        pos = positions(mask)
        cache = mm.new_cache()
        hidden = mm.hidden_states(mm.embed(ids), mask, pos, cache)[:, -1]
        halves.append({"mask": mask, "pos": pos[:, -1:], "cache": cache, "hidden": hidden})
    out = torch.empty((b, n), dtype=torch.long, device=device)
    for step in range(n):
        logits = torch.cat([mm.image_logits(h["hidden"]) for h in halves])
        chosen = next_ids(logits, b, step, n, config, gen)
        out[:, step] = chosen
        if step == n - 1:
            break
        embeds = mm.embed((chosen + mm.ids.image_start).unsqueeze(1), check=False)
        for h in halves:
            h["mask"] = torch.cat([h["mask"], h["mask"].new_ones(b, 1)], dim=1)
            h["pos"] = h["pos"] + 1
            h["hidden"] = mm.hidden_states(embeds, h["mask"], h["pos"], h["cache"])[:, -1]
    return out


def make_hf_model(mm):
    """(b): a Hugging Face ``PreTrainedModel`` + ``GenerationMixin`` whose logits are the MLLM's
    joint logits ``cat([lm_head(h), image_head(h)])`` over V + K*m + 3 ids. Inputs (joint ids) are
    embedded by ``mm.embed``; position ids come from ``generate`` (counted over the attention mask)
    or, for the unconditional branch that HF's CFG processor runs without them, from the mask."""
    from transformers import GenerationMixin, PreTrainedModel
    from transformers.modeling_outputs import CausalLMOutputWithPast

    from semhitok.mllm.sampling import positions

    config = copy.deepcopy(mm.llm.config)
    config.vocab_size = mm.ids.total
    config.tie_word_embeddings = False

    class JointCausalLM(PreTrainedModel, GenerationMixin):
        config_class = type(config)
        base_model_prefix = "mm"
        main_input_name = "input_ids"
        # attention runs inside mm.llm (its own implementation); these only let the wrapper build
        _supports_sdpa = True
        _supports_flash_attn = True
        _supports_flex_attn = True
        _supports_attention_backend = True

        def __init__(self, config, mm):
            super().__init__(config)
            self.mm = mm

        def forward(self, input_ids: Tensor | None = None, attention_mask: Tensor | None = None, position_ids: Tensor | None = None,
                    cache: Any = None, use_cache: bool | None = None, inputs_embeds: Tensor | None = None, logits_to_keep: int = 0,
                    **kwargs: Any) -> CausalLMOutputWithPast:
            embeds = inputs_embeds if inputs_embeds is not None else self.mm.embed(input_ids, check=False)
            b, t = embeds.shape[:2]
            if use_cache is None:
                use_cache = True
            if use_cache and cache is None:
                cache = self.mm.new_cache()
            past = cache.get_seq_length() if cache is not None else 0
            if attention_mask is None:
                attention_mask = torch.ones((b, past + t), dtype=torch.long, device=embeds.device)
            if position_ids is None:
                position_ids = positions(attention_mask)[:, -t:]
            hidden = self.mm.hidden_states(embeds, attention_mask, position_ids, cache if use_cache else None)
            if logits_to_keep:
                hidden = hidden[:, -logits_to_keep:]
            return CausalLMOutputWithPast(logits=self.mm.joint_logits(hidden), cache=cache if use_cache else None)

    return JointCausalLM(config, mm).eval()


class ImageIdsOnly:
    """Logits processor: -inf outside the image ids [image_start, image_start + K*m)."""

    def __init__(self, start: int, stop: int) -> None:
        self.start, self.stop = start, stop

    def __call__(self, input_ids: Tensor, scores: Tensor) -> Tensor:
        out = torch.full_like(scores, -math.inf)
        out[:, self.start:self.stop] = scores[:, self.start:self.stop]
        return out


@torch.no_grad()
def run_hf(hf, mm, cond, uncond, n: int, config, seed: int) -> Tensor:
    from transformers import LogitsProcessor, LogitsProcessorList

    from semhitok.mllm.sampling import left_pad

    device = mm.image_head.weight.device
    ids, mask = left_pad(cond, mm.pad_id, device)
    neg, neg_mask = left_pad(uncond, mm.pad_id, device)
    only = ImageIdsOnly(mm.ids.image_start, mm.ids.image_start + mm.ids.num_image)
    processor = type("ImageIdsOnlyProcessor", (LogitsProcessor,), {"__call__": lambda self, i, s: only(i, s)})()
    sampled = config.temperature > 0
    kwargs: dict[str, Any] = dict(do_sample=sampled, top_k=None, top_p=None)
    if sampled:
        kwargs["temperature"] = config.temperature
    torch.manual_seed(seed)  # HF samples from torch's global generator
    out = hf.generate(
        input_ids=ids, attention_mask=mask, negative_prompt_ids=neg, negative_prompt_attention_mask=neg_mask,
        guidance_scale=config.cfg_scale, min_new_tokens=n, max_new_tokens=n, logits_processor=LogitsProcessorList([processor]),
        pad_token_id=mm.pad_id, eos_token_id=None, bos_token_id=None, use_cache=True, **kwargs,
    )
    return out[:, ids.shape[1]:] - mm.ids.image_start


def runners(mm, batch: int, n: int, seed: int, greedy: bool = False) -> dict[str, Callable[[int], Tensor]]:
    """Method -> fn(num_tokens) -> (B, num_tokens) ids."""
    from semhitok.mllm.sampling import SamplingConfig

    config = SamplingConfig(cfg_scale=CFG_SCALE, temperature=0.0 if greedy else 1.0)
    cond, uncond = prompts(mm, batch)
    hf = make_hf_model(mm)
    return {
        "ours": lambda k: run_ours(mm, cond, uncond, k, config, seed, use_cache=True),
        "recompute": lambda k: run_ours(mm, cond, uncond, k, config, seed, use_cache=False),
        "hf_generate": lambda k: run_hf(hf, mm, cond, uncond, k, config, seed),
        "ours_unbatched_cfg": lambda k: run_unbatched_cfg(mm, cond, uncond, k, config, seed),
    }


def maybe_compile(mm) -> None:
    """``--compile``: torch.compile the decoder stack (every method's forwards go through it)."""
    body = mm.llm.base_model
    body.forward = torch.compile(body.forward, dynamic=True)


# ---- memory ---------------------------------------------------------------------------------
def child_main(spec: dict) -> None:
    """One memory measurement in this fresh process: build, warm up on 2 tokens, measure 1 run."""
    if spec.get("threads"):
        torch.set_num_threads(spec["threads"])
    device = torch.device("cpu")
    mm, _ = build_mllm(spec["llm"], spec["tokens"], device, getattr(torch, spec["dtype"]), spec["real_smollm2"])
    if spec["compile"]:
        maybe_compile(mm)
    fn = runners(mm, spec["batch"], spec["tokens"], spec["seed"])[spec["method"]]
    fn(min(2, spec["run_tokens"]))
    with PeakRSS() as m:
        fn(spec["run_tokens"])
    print(json.dumps({"peak_bytes": m.peak, "hwm_bytes": m.hwm, "sampled_bytes": m.sampled, "run_tokens": spec["run_tokens"]}))


def measure_peak_child(spec: dict) -> dict:
    """Run :func:`child_main` in a fresh process (fixed glibc mmap threshold, so RSS follows the
    live allocations: see benchmarks/quantizers.py's measure_peak)."""
    env = dict(os.environ, MALLOC_MMAP_THRESHOLD_="65536", MALLOC_TRIM_THRESHOLD_="131072")
    res = subprocess.run([sys.executable, __file__, "--_child", json.dumps(spec)], env=env, capture_output=True, text=True, check=False)
    if res.returncode != 0:
        raise RuntimeError(f"memory child {spec['method']} failed:\n{res.stderr[-3000:]}")
    return json.loads(res.stdout.strip().splitlines()[-1])


# ---- one configuration ----------------------------------------------------------------------
def extrapolate(n1: int, t1: float, n2: int, t2: float, n: int) -> tuple[float, dict]:
    """Recompute's time for n tokens from runs of n1 and n2 tokens: T(k) = k*A + b*k(k-1)/2.

    Returns (time, fit). A per-forward cost cannot fall with the length: when noise makes the fit
    give b < 0 (or A < 0), b = 0 and A = t1/n1 are used instead, which underestimates the
    recompute time (the conservative side for the speed-up of ours); ``fit["clamped"]`` says so.
    """
    # [[n1, n1(n1-1)/2], [n2, n2(n2-1)/2]] @ [A, b] = [t1, t2]
    a11, a12, a21, a22 = n1, n1 * (n1 - 1) / 2, n2, n2 * (n2 - 1) / 2
    det = a11 * a22 - a12 * a21
    A = (t1 * a22 - a12 * t2) / det
    b = (a11 * t2 - a21 * t1) / det
    clamped = b < 0 or A < 0
    if clamped:
        A, b = t1 / n1, 0.0
    return n * A + b * n * (n - 1) / 2, {"A_s": A, "b_s": b, "clamped": clamped}


def bench_config(llm_name: str, tokens: int, args, device: torch.device, dtype: torch.dtype, log) -> dict:
    mm, what = build_mllm(llm_name, tokens, device, dtype, args.real_smollm2)
    if args.compile:
        maybe_compile(mm)
    b = args.batch
    cond, uncond = prompts(mm, b)
    res: dict = {"llm": llm_name, "llm_built": what, "llm_params": count_params(mm.llm), "image_tokens": tokens,
                 "grid": int(math.isqrt(tokens)), "codebook": {"K": mm.ids.num_image // mm.tokenizer.subcodebook_size, "m": mm.tokenizer.subcodebook_size},
                 "image_vocab": mm.ids.num_image, "joint_vocab": mm.ids.total, "batch": b, "cfg_scale": CFG_SCALE,
                 "prompt_tokens": {"cond": [len(p) for p in cond], "uncond": len(uncond[0])}, "methods": {}}
    log(f"{llm_name} ({what}), {tokens} image tokens, batch {b}")

    # correctness guard: greedy ids, same seed, first check_tokens tokens
    k = min(tokens, args.check_tokens)
    greedy = runners(mm, b, tokens, args.seed, greedy=True)
    ids = {name: fn(k) for name, fn in greedy.items()}
    check = {"tokens_checked": k, "recompute_equal_ours": bool(torch.equal(ids["ours"], ids["recompute"]))}
    for name in ("hf_generate", "ours_unbatched_cfg"):
        check[f"{name}_equal_ours"] = bool(torch.equal(ids["ours"], ids[name]))
        check[f"{name}_ids_differing"] = int((ids["ours"] != ids[name]).sum())
    check["recompute_ids_differing"] = int((ids["ours"] != ids["recompute"]).sum())
    res["ids_check"] = check
    log(f"  greedy ids on {k} tokens: recompute == ours: {check['recompute_equal_ours']}, hf == ours: {check['hf_generate_equal_ours']}, "
        f"unbatched == ours: {check['ours_unbatched_cfg_equal_ours']}")
    del greedy, ids

    # timing, interleaved
    fns = runners(mm, b, tokens, args.seed)
    short = args.recompute_tokens and args.recompute_tokens < tokens
    rec_n = [args.recompute_tokens, max(1, args.recompute_tokens // 2)] if short else [tokens]
    jobs: list[tuple[str, int, int]] = []  # (method, num tokens, repeats)
    for name in METHODS:
        if name == "recompute":
            jobs += [(name, n, args.recompute_repeats) for n in rec_n]
        else:
            jobs.append((name, tokens, args.repeats))
    for name, n, _ in jobs:  # warm-up (recompute: 2 tokens, the others: full runs)
        for _ in range(1 if name == "recompute" else args.warmup):
            fns[name](min(2, n) if name == "recompute" else n)
    sync(device)
    times: dict[tuple[str, int], list[float]] = {(name, n): [] for name, n, _ in jobs}
    for i in range(max(r for _, _, r in jobs)):
        for name, n, reps in (jobs if i % 2 == 0 else jobs[::-1]):
            if i >= reps:
                continue
            gc.collect()
            sync(device)
            t0 = time.perf_counter()
            fns[name](n)
            sync(device)
            times[(name, n)].append(time.perf_counter() - t0)
        log(f"  round {i + 1}: " + ", ".join(f"{name}[{n}] {times[(name, n)][-1]:.2f}s" for name, n, reps in jobs if i < reps))

    for name in METHODS:
        entry: dict = {}
        if name == "recompute" and short:
            (n1, n2) = rec_n
            m1, m2 = statistics.median(times[(name, n1)]), statistics.median(times[(name, n2)])
            median, fit = extrapolate(n1, m1, n2, m2, tokens)
            entry.update(extrapolated=True, measured={str(n1): times[(name, n1)], str(n2): times[(name, n2)]}, fit=fit,
                         note=f"time extrapolated from the median runs of {n1} and {n2} image tokens to {tokens} (T(n) = n*A + b*n(n-1)/2"
                         + (", b < 0 from noise: clamped to b = 0, a lower bound" if fit["clamped"] else "") + ")")
            entry.update(median_s=median, min_s=None, runs_s=None)
        else:
            ts = times[(name, tokens)]
            entry.update(extrapolated=False, median_s=statistics.median(ts), min_s=min(ts), runs_s=ts)
        entry["images_per_s"] = b / entry["median_s"]
        entry["image_tokens_per_s"] = b * tokens / entry["median_s"]
        res["methods"][name] = entry

    # peak memory
    for name in METHODS:
        run_tokens = rec_n[0] if name == "recompute" else tokens
        entry = res["methods"][name]
        if args.no_memory:
            entry["peak_memory_bytes"] = None
            continue
        if device.type == "cuda":
            fns[name](min(2, run_tokens))
            gc.collect()
            torch.cuda.empty_cache()
            sync(device)
            torch.cuda.reset_peak_memory_stats(device)
            before = torch.cuda.memory_allocated(device)
            fns[name](run_tokens)
            sync(device)
            entry["peak_memory_bytes"] = torch.cuda.max_memory_allocated(device) - before
            entry["peak_memory_kind"] = "torch.cuda.max_memory_allocated increase over one run"
        else:
            spec = {"llm": llm_name, "tokens": tokens, "run_tokens": run_tokens, "batch": b, "seed": args.seed, "method": name,
                    "dtype": str(dtype).removeprefix("torch."), "real_smollm2": args.real_smollm2, "compile": args.compile,
                    "threads": torch.get_num_threads()}
            m = measure_peak_child(spec)
            entry["peak_memory_bytes"] = m["peak_bytes"]
            entry["peak_memory_kind"] = "peak RSS increase over one run, fresh child process"
            entry["memory_child"] = m
        entry["peak_memory_run_tokens"] = run_tokens
    ours = res["methods"]["ours"]["median_s"]
    res["speedup_of_ours"] = {name: res["methods"][name]["median_s"] / ours for name in METHODS if name != "ours"}
    res["targets"] = {"recompute_10x": res["speedup_of_ours"]["recompute"] >= 10, "hf_generate_2x": res["speedup_of_ours"]["hf_generate"] >= 2}
    for name in METHODS:
        e = res["methods"][name]
        mem = f"{e['peak_memory_bytes'] / MIB:.1f} MiB" if e.get("peak_memory_bytes") is not None else "-"
        log(f"  {name:20s} {e['images_per_s']:8.3f} img/s {e['image_tokens_per_s']:9.1f} tok/s  peak {mem}"
            + (" (extrapolated)" if e["extrapolated"] else "") + (f"  ours {res['speedup_of_ours'][name]:.1f}x faster" if name != "ours" else ""))
    del fns, mm
    gc.collect()
    return res


# ---- report ---------------------------------------------------------------------------------
def markdown(res: dict) -> str:
    m = res["machine"]
    lines = [
        f"Machine: {m['cpu']}, {m['cpu_count']} CPUs, {m['torch_threads']} torch threads, torch {m['torch']}, transformers {m['transformers']}, "
        f"device {m['device']}" + (f" ({m['gpu']})" if "gpu" in m else "") + f", dtype {res['dtype']}" + (", torch.compile" if res["compile"] else ""),
        f"Load average at start {res['loadavg_start']}, at end {res['loadavg_end']}; {res['seconds']:.0f} s in all.",
        "",
        "| LLM | h*w | batch | method | images/s | image tokens/s | ours faster by | peak memory MiB |",
        "|---|---:|---:|---|---:|---:|---:|---:|",
    ]
    for c in res["configs"]:
        for name in METHODS:
            e = c["methods"][name]
            mem = f"{e['peak_memory_bytes'] / MIB:.1f}" if e.get("peak_memory_bytes") is not None else "-"
            if e.get("peak_memory_bytes") is not None and e.get("peak_memory_run_tokens") != c["image_tokens"]:
                mem += f" ({e['peak_memory_run_tokens']} tokens)"
            speed = "-" if name == "ours" else f"{c['speedup_of_ours'][name]:.1f}x"
            mark = " (extrapolated)" if e["extrapolated"] else ""
            lines.append(f"| {c['llm']} | {c['image_tokens']} | {c['batch']} | {name}{mark} | {e['images_per_s']:.3f} | "
                         f"{e['image_tokens_per_s']:.1f} | {speed} | {mem} |")
    lines += ["", "| LLM | h*w | greedy tokens checked | recompute == ours | hf_generate == ours | unbatched CFG == ours | targets (recompute >= 10x, HF >= 2x) |",
              "|---|---:|---:|---|---|---|---|"]
    for c in res["configs"]:
        k = c["ids_check"]
        lines.append(f"| {c['llm']} | {c['image_tokens']} | {k['tokens_checked']} | {k['recompute_equal_ours']} | {k['hf_generate_equal_ours']} "
                     f"({k['hf_generate_ids_differing']} differ) | {k['ours_unbatched_cfg_equal_ours']} ({k['ours_unbatched_cfg_ids_differing']} differ) | "
                     f"{c['targets']['recompute_10x']}, {c['targets']['hf_generate_2x']} |")
    lines += ["", "Methods: ours = sample_image_ids with the KV cache, conditional and unconditional rows batched (2B rows); "
              "recompute = sample_image_ids(use_cache=False); hf_generate = transformers generate(guidance_scale) on a GenerationMixin "
              "wrapper with joint logits (HF's unbatched CFG: the unconditional rows as a separate forward); ours_unbatched_cfg = our loop "
              "with the two halves as two cached forwards per step. CFG scale 4, temperature 1; median of the timed runs."]
    extrapolated = [c for c in res["configs"] if c["methods"]["recompute"]["extrapolated"]]
    for c in extrapolated:
        lines.append(f"Extrapolated: {c['llm']}, h*w {c['image_tokens']}: {c['methods']['recompute']['note']}.")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--llms", nargs="+", default=list(LLMS), choices=list(LLMS), help="LLM shapes (default: all)")
    ap.add_argument("--tokens", nargs="+", type=int, default=list(GRIDS), choices=list(GRIDS), help="image lengths h*w (default: all)")
    ap.add_argument("--batch", type=int, default=2 if TOY else 4, help="images per call, B (2B rows with CFG; default 4)")
    ap.add_argument("--repeats", type=int, default=1 if TOY else 3, help="timed runs per method (default 3)")
    ap.add_argument("--warmup", type=int, default=1, help="untimed full runs first (default 1; recompute: one 2-token run)")
    ap.add_argument("--recompute-repeats", type=int, default=1, help="timed runs of the recompute baseline (default 1: it is slow)")
    ap.add_argument("--recompute-tokens", type=int, default=0, help="time recompute on N and N/2 tokens and extrapolate to h*w (default 0: measure it in full)")
    ap.add_argument("--check-tokens", type=int, default=16 if TOY else 64, help="image tokens of the greedy ids check (default 64)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--device", default="cpu", help="cpu (default) or cuda")
    ap.add_argument("--bf16", action="store_true", help="the whole MLLM in bfloat16 (guidance and draws stay fp32)")
    ap.add_argument("--compile", action="store_true", help="torch.compile the decoder stack (dynamic shapes) for every method")
    ap.add_argument("--real-smollm2", action="store_true", help="load the real SmolLM2-135M-Instruct (semhitok.llm) for the smollm2-135m rows")
    ap.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's default)")
    ap.add_argument("--no-memory", action="store_true", help="skip the peak-memory measurements")
    ap.add_argument("--json", type=Path, help="write every measurement here")
    ap.add_argument("--markdown", type=Path, help="write the tables here")
    ap.add_argument("--_child", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args._child:
        child_main(json.loads(args._child))
        return 0
    if args.threads:
        torch.set_num_threads(args.threads)
    if min(args.batch, args.repeats, args.recompute_repeats, args.check_tokens) < 1 or args.warmup < 0 or args.recompute_tokens < 0:
        ap.error("--batch, --repeats, --recompute-repeats, --check-tokens must be >= 1; --warmup, --recompute-tokens >= 0")
    if 0 < args.recompute_tokens < 4:
        ap.error("--recompute-tokens must be 0 or >= 4 (runs of N and N/2 tokens are fitted)")
    device = torch.device(args.device)
    dtype = torch.bfloat16 if args.bf16 else torch.float32

    def log(msg: str) -> None:
        print(msg, flush=True)

    started = time.perf_counter()
    res: dict = {"machine": machine_info(device), "loadavg_start": [round(v, 2) for v in os.getloadavg()], "toy": TOY,
                 "command": " ".join([Path(sys.executable).name, *sys.argv]), "dtype": str(dtype).removeprefix("torch."),
                 "compile": args.compile, "args": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items() if not k.startswith("_")},
                 "configs": []}
    log(f"machine: {res['machine']}")
    for llm_name in args.llms:
        for tokens in args.tokens:
            res["configs"].append(bench_config(llm_name, tokens, args, device, dtype, log))
    res["loadavg_end"] = [round(v, 2) for v in os.getloadavg()]
    res["seconds"] = time.perf_counter() - started
    res["all_ids_checks_passed"] = all(c["ids_check"]["recompute_equal_ours"] for c in res["configs"])
    if not res["all_ids_checks_passed"]:
        log("ids check FAILED: greedy ids of the cached sampler differ from full recomputation"
            + (" (bf16: rounding differs between the two paths; a mismatch is not necessarily a bug)" if args.bf16 else ""))
    table = markdown(res)
    print(table)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(res, indent=2) + "\n")
    if args.markdown:
        args.markdown.parent.mkdir(parents=True, exist_ok=True)
        args.markdown.write_text(table)
    return 0 if res["all_ids_checks_passed"] or args.bf16 else 1


if __name__ == "__main__":
    sys.exit(main())
