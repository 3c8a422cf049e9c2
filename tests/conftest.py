"""Shared test setup: no hub access, and a fixed RNG state at the start of every test."""

import os

os.environ["HF_HUB_OFFLINE"] = "1"

import pytest  # noqa: E402
import torch  # noqa: E402


@pytest.fixture(autouse=True)
def _seed_and_offline():
    """Every test starts offline and from the same torch RNG state."""
    os.environ["HF_HUB_OFFLINE"] = "1"
    torch.manual_seed(0)
    yield
