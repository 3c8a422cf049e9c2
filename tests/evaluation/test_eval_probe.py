"""The linear probe: separable data is separated, noise is not, and the result is deterministic."""

import pytest
import torch

from semhitok.evaluation.probe import linear_probe


def _blobs(n, d, classes, spread, seed):
    g = torch.Generator().manual_seed(seed)
    centres = torch.randn(classes, d, generator=torch.Generator().manual_seed(99)) * 3
    y = torch.randint(0, classes, (n,), generator=g)
    return centres[y] + spread * torch.randn(n, d, generator=g), y


def test_separable_blobs_are_separated():
    x, y = _blobs(400, 8, 5, 0.3, 0)
    xt, yt = _blobs(200, 8, 5, 0.3, 1)
    result = linear_probe(x, y, xt, yt)
    assert result.train_accuracy == 1.0 and result.test_accuracy == 1.0


def test_labels_unrelated_to_the_features_are_at_chance():
    g = torch.Generator().manual_seed(0)
    x, xt = torch.randn(500, 4, generator=g), torch.randn(2000, 4, generator=g)
    y, yt = torch.randint(0, 10, (500,), generator=g), torch.randint(0, 10, (2000,), generator=g)
    assert linear_probe(x, y, xt, yt).test_accuracy == pytest.approx(0.1, abs=0.04)


def test_deterministic_and_scale_invariant():
    x, y = _blobs(300, 6, 4, 2.0, 2)
    xt, yt = _blobs(300, 6, 4, 2.0, 3)
    a = linear_probe(x, y, xt, yt)
    assert linear_probe(x, y, xt, yt) == a
    assert linear_probe(x * 1000 + 5, y, xt * 1000 + 5, yt).test_accuracy == pytest.approx(a.test_accuracy, abs=0.01)


def test_bad_shapes_are_refused():
    with pytest.raises(ValueError, match="same D"):
        linear_probe(torch.zeros(3, 2), torch.zeros(3), torch.zeros(3, 4), torch.zeros(3))
