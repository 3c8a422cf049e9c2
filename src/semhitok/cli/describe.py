"""``semhitok describe``: images -> answers to a question, from a SemHiTok MLLM."""

from __future__ import annotations

import argparse
import json

from . import common, mllm_options
from .common import OutputFile, info
from .errors import CLIError, one_line

NAME = "describe"
HELP = "images -> answers to a question about each, with a SemHiTok MLLM"
DESCRIPTION = (
    "Answer a question about each image with a SemHiTok MLLM (the paper's understanding use): the image "
    "is encoded into SemHiTok tokens and the LLM answers after them. One line per image on stdout: PATH: answer."
)
EXAMPLE = """\
example:
  semhitok describe photos/*.jpg --model runs/mllm/final --question "What colour is it?" --json answers.json

Answers are greedy (the same every run) unless --sample; --temperature, --top-p and --seed apply
to sampled answers only. A line break inside an answer is printed as a space, so each image
stays one line; the JSON file keeps the answers as generated (stripped)."""
HELP_DEFAULT_QUESTION = "Describe the image."


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(NAME, help=HELP, description=DESCRIPTION, epilog=EXAMPLE, formatter_class=common.HelpFormatter)
    p.add_argument("images", nargs="+", metavar="IMG", help="image files (any format PIL reads; sizes may differ)")
    mllm_options.add_mllm_options(p)
    # The default stays None here: importing the MLLM code (torch, transformers) to build the parser
    # would slow every 'semhitok --help'. A test keeps this text equal to the library's default.
    p.add_argument("--question", default=None, metavar="TEXT", help=f"what to ask about every image (default {HELP_DEFAULT_QUESTION!r})")
    p.add_argument("--max-new-tokens", type=common.positive_int, default=64, metavar="N", help="longest answer, in text tokens (default 64)")
    p.add_argument("--json", default=None, metavar="OUT.json", help="also write the answers and settings to this JSON file")
    common.add_resize_option(p)
    common.add_batch_size_option(p, default=8)
    g = p.add_argument_group("sampling (default: greedy answers)")
    g.add_argument("--sample", action="store_true", help="sample the answers instead of taking the most likely token")
    g.add_argument("--temperature", type=mllm_options.non_negative_float, default=None, metavar="T", help="with --sample: softmax temperature (default 1)")
    g.add_argument("--top-p", type=mllm_options.probability, default=None, metavar="P", help="with --sample: nucleus, in (0, 1] (default 1)")
    g.add_argument("--seed", type=mllm_options.seed, default=None, metavar="S", help="with --sample: seed of the draws (default: a random one)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ..mllm.model import DEFAULT_QUESTION

    _check_sampling_options(args)
    if args.question is None:
        args.question = DEFAULT_QUESTION
    if not args.question.strip():
        raise CLIError("--question is empty; ask something, e.g. --question \"What is in the image?\"")
    common.check_image_paths(args.images)
    if args.json is None:
        answers = _answers(args)
    else:
        common.refuse_overwriting_inputs([*args.images, args.model], args.json, flag="--json")
        with OutputFile(args.json) as out:
            answers = _answers(args)
            with out.open("w", encoding="utf-8") as f:
                json.dump(_record(args, answers), f, indent=2)
                f.write("\n")
            out.commit()
    # Printed only once every image is answered: a failure leaves one error line, no partial list.
    for path, answer in zip(args.images, answers):
        info(f"{path}: {one_line(answer)}")
    return 0


def _check_sampling_options(args: argparse.Namespace) -> None:
    """Sampling knobs without --sample would be silently ignored by greedy decoding: refuse them."""
    if args.sample:
        return
    given = [flag for flag, value in (("--temperature", args.temperature), ("--top-p", args.top_p), ("--seed", args.seed)) if value is not None]
    if given:
        raise CLIError(f"{', '.join(given)} appl{'y' if len(given) > 1 else 'ies'} to sampled answers only; add --sample")


def _answers(args: argparse.Namespace) -> list[str]:
    """Every image's answer, in input order (images read and fit in batches)."""
    mm = mllm_options.load_mllm(args).model
    device = mm.image_head.weight.device
    kwargs: dict = {"max_new_tokens": args.max_new_tokens}
    if args.sample:
        temperature = 1.0 if args.temperature is None else args.temperature
        if temperature == 0:
            # HF's sampler divides by the temperature; 0 means "most likely token", i.e. greedy.
            kwargs["do_sample"] = False
        else:
            kwargs.update(do_sample=True, temperature=temperature, top_p=args.top_p, seed=args.seed)
    answers: list[str] = []
    size = mm.tokenizer.image_size
    precision = mllm_options.model_precision(args, mm)
    for _, batch in common.image_batches(args.images, size, args.resize, args.batch_size, desc="describe"):
        with precision.autocast(device):
            answers += mm.describe(batch.to(device), args.question, **kwargs)
    return answers


def _record(args: argparse.Namespace, answers: list[str]) -> dict:
    return {
        "model": args.model,
        "tokenizer": args.tokenizer,
        "question": args.question,
        "settings": {
            "max_new_tokens": args.max_new_tokens,
            "sample": args.sample,
            "temperature": args.temperature,
            "top_p": args.top_p,
            "seed": args.seed,
            "resize": args.resize,
        },
        "answers": [{"file": path, "answer": answer} for path, answer in zip(args.images, answers)],
    }
