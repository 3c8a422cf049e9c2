"""The README's examples run as written: the ```python blocks, and every command of the Training
section (with tiny step counts)."""

import re
import shlex
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
TEXT = README.read_text()
BLOCKS = re.findall(r"```python\n(.*?)```", TEXT, flags=re.S)


def _training_commands() -> list[str]:
    section = TEXT.split("\n## Training\n", 1)[1].split("\n## ", 1)[0]
    block = re.search(r"```\n(.*?)```", section, flags=re.S)
    assert block, "the Training section lost its command block"
    return [line.strip() for line in block.group(1).splitlines() if line.strip()]


COMMANDS = _training_commands()


def test_readme_has_examples():
    assert len(BLOCKS) >= 2


@pytest.mark.parametrize("index", range(len(BLOCKS)))
def test_readme_example_runs(index, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # examples write files relative to the working directory
    exec(compile(BLOCKS[index], f"README.md example {index}", "exec"), {})


def test_readme_training_commands_run(tmp_path, monkeypatch, capsys):
    """Each ``semhitok`` line, in order, from a folder that sees the repository's configs/ and
    assets/ like the README's reader (2 steps each instead of 50); the torchrun line (8 GPUs, the
    paper's teacher) is parsed and its config validated."""
    from semhitok.cli.main import build_parser, main
    from semhitok.training import TrainConfig

    for name in ("configs", "assets"):
        (tmp_path / name).symlink_to(ROOT / name)
    monkeypatch.chdir(tmp_path)
    semhitok_lines = [c for c in COMMANDS if c.startswith("semhitok ")]
    assert len(semhitok_lines) >= 3 and any(c.startswith("torchrun ") for c in COMMANDS)
    for command in COMMANDS:
        argv = shlex.split(command, comments=True)
        if argv[0] == "torchrun":
            args = build_parser().parse_args(argv[argv.index("semhitok") + 1 :])
            assert args.command == "train" and TrainConfig.from_yaml(args.config).stage == "semantic"
            continue
        assert argv[0] == "semhitok", command
        extra = ["--max-steps", "2", "--quiet"] if argv[1] == "train" else []
        code = main(argv[1:] + extra)
        assert code == 0, f"{command}: {capsys.readouterr().err}"
    assert (tmp_path / "runs" / "s2" / "model" / "model.safetensors").is_file()
    assert (tmp_path / "models" / "s2" / "config.json").is_file()
