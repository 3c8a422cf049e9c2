"""Command-line key=value overrides."""

import pytest

from semhitok.training.overrides import apply_overrides


def test_values_are_typed_and_nested():
    base = {"optim": {"lr": 1e-4, "betas": [0.9, 0.95]}, "stage": "semantic"}
    out = apply_overrides(base, ["optim.lr=3e-4", "optim.betas=[0.5, 0.9]", "run.bf16=true", "stage=pixel", "init=null"])
    assert out == {"optim": {"lr": 3e-4, "betas": [0.5, 0.9]}, "stage": "pixel", "run": {"bf16": True}, "init": None}
    assert base["optim"]["lr"] == 1e-4  # the input is not modified


@pytest.mark.parametrize("bad, message", [("lr", "key.sub=value"), ("=3", "key.sub=value"), ("a..b=1", "key.sub=value"), ("stage.x=1", "not a section"), ("a=[1,", "cannot parse")])
def test_bad_overrides(bad, message):
    with pytest.raises(ValueError, match=message):
        apply_overrides({"stage": "semantic"}, [bad])


def test_yaml_1_2_floats(tmp_path):
    """1e-4 is a float (PyYAML alone reads it as a string); strings stay strings."""
    from semhitok.yaml_io import load_yaml, parse_yaml

    assert parse_yaml("1e-4") == 1e-4 and parse_yaml("-2E+3") == -2000.0 and parse_yaml("3") == 3
    assert parse_yaml("1e-4x") == "1e-4x" and parse_yaml("v1e4") == "v1e4"
    (tmp_path / "c.yaml").write_text("optim:\n  lr: 4e-5\n")
    assert load_yaml(tmp_path / "c.yaml") == {"optim": {"lr": 4e-5}}
