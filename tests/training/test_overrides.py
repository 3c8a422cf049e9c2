"""Command-line key=value overrides, and reading YAML: safe, YAML 1.2 floats, one-line errors."""

import pytest

from semhitok.training.overrides import apply_overrides
from semhitok.yaml_io import YAMLFileError, load_yaml, parse_yaml


def test_values_are_typed_and_nested():
    base = {"optim": {"lr": 1e-4, "betas": [0.9, 0.95]}, "stage": "semantic"}
    out = apply_overrides(base, ["optim.lr=3e-4", "optim.betas=[0.5, 0.9]", "run.bf16=true", "stage=pixel", "init=null"])
    assert out == {"optim": {"lr": 3e-4, "betas": [0.5, 0.9]}, "stage": "pixel", "run": {"bf16": True}, "init": None}
    assert base["optim"]["lr"] == 1e-4  # the input is not modified


@pytest.mark.parametrize(
    "bad, message",
    [
        ("lr", "override 'lr' must look like key.sub=value"),
        ("=3", "override '=3' must look like key.sub=value"),
        ("a..b=1", "override 'a..b=1' must look like key.sub=value"),
        ("stage.x=1", "override 'stage.x=1': stage is not a section"),
        ("a=[1,", "override 'a=[1,': cannot parse the value: while parsing a flow node, expected the node content, but found '<stream end>'"),
        ("a=!!python/object/apply:os.system ['touch x']", "override \"a=!!python/object/apply:os.system ['touch x']\": cannot parse the value: refusing the Python tag !!python/object/apply:os.system (configs hold plain values; nothing is executed)"),
        ("a={b: 1, b: 2}", "override 'a={b: 1, b: 2}': cannot parse the value: the key 'b' is given twice in the same mapping"),
    ],
)
def test_bad_overrides(bad, message):
    with pytest.raises(ValueError) as info:
        apply_overrides({"stage": "semantic"}, [bad])
    assert str(info.value) == message


def test_yaml_1_2_floats(tmp_path):
    """1e-4 is a float (PyYAML alone reads it as a string); strings stay strings."""
    assert parse_yaml("1e-4") == 1e-4 and parse_yaml("-2E+3") == -2000.0 and parse_yaml("3") == 3
    assert parse_yaml("1e-4x") == "1e-4x" and parse_yaml("v1e4") == "v1e4"
    (tmp_path / "c.yaml").write_text("optim:\n  lr: 4e-5\n")
    assert load_yaml(tmp_path / "c.yaml") == {"optim": {"lr": 4e-5}}


@pytest.mark.parametrize(
    "text, message",
    [
        ("stage: semantic\nrun:\n  seed: !!python/object/apply:os.system ['touch pwned']\n",
         "line 3, column 9: refusing the Python tag !!python/object/apply:os.system (configs hold plain values; nothing is executed)"),
        ("a: !!python/name:os.system\n", "line 1, column 4: refusing the Python tag !!python/name:os.system"),
        ("a: !custom 1\n", "line 1, column 4: unknown tag !custom (configs hold plain values)"),
        ("stage: semantic\nmodel:\n\tpreset: tiny\n", "line 3, column 1: a tab character cannot indent YAML; use spaces"),
        ("optim: {lr: 1\n", "line 2, column 1: while parsing a flow mapping, expected ',' or '}', but got '<stream end>'"),
        ("a: 1\n b: 2\n", "line 2, column 3: mapping values are not allowed here"),
        ("a: 'open\n", "line 2, column 1: while scanning a quoted scalar, found unexpected end of stream"),
        ("optim:\n  lr: 1\n  lr: 2\n", "line 3, column 3: the key 'lr' is given twice in the same mapping"),
    ],
)
def test_yaml_errors_name_file_and_line(tmp_path, text, message):
    path = tmp_path / "x.yaml"
    path.write_text(text)
    with pytest.raises(YAMLFileError) as info:
        load_yaml(path)
    assert str(info.value).startswith(f"{path}: {message}")
    assert "\n" not in str(info.value)
    assert not (tmp_path / "pwned").exists()


def test_merge_keys_may_be_overridden():
    """``<<: *base`` then a key of base is an override, not a duplicate."""
    assert parse_yaml("b: &b {x: 1, y: 2}\nc:\n  <<: *b\n  x: 3\n")["c"] == {"x": 3, "y": 2}
