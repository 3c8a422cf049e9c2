"""flatten_ids / unflatten_ids: id = k*m + j, exact inverse, clear errors."""

import pytest
import torch

from semhitok.quantizers import flatten_ids, unflatten_ids


def test_round_trip_exhaustive_small_grid():
    """For every K, m <= 5 and every (k, j): id == k*m + j, ids are a bijection onto range(K*m), unflatten inverts."""
    for K in range(1, 6):
        for m in range(1, 6):
            k = torch.arange(K).repeat_interleave(m)
            j = torch.arange(m).repeat(K)
            ids = flatten_ids(k, j, m)
            assert ids.dtype == torch.long
            assert ids.tolist() == [kk * m + jj for kk in range(K) for jj in range(m)]
            assert sorted(ids.tolist()) == list(range(K * m))
            k2, j2 = unflatten_ids(ids, m)
            assert torch.equal(k2, k) and torch.equal(j2, j)
            assert k2.dtype == j2.dtype == torch.long


def test_shapes_and_integer_dtypes_preserved():
    """(B,h,w) in, (B,h,w) long out, for int32 inputs too."""
    k = torch.randint(0, 100, (2, 3, 4), dtype=torch.int32)
    j = torch.randint(0, 7, (2, 3, 4), dtype=torch.int32)
    ids = flatten_ids(k, j, 7)
    assert ids.shape == (2, 3, 4) and ids.dtype == torch.long
    assert torch.equal(ids, k.long() * 7 + j.long())
    k2, j2 = unflatten_ids(ids, 7)
    assert torch.equal(k2, k.long()) and torch.equal(j2, j.long())


def test_paper_sizes():
    """K=16384, m=12: ids span [0, 196607], the last pair maps to 196607 and back."""
    K, m = 16384, 12
    k = torch.tensor([0, 0, 1, 16383, 16383])
    j = torch.tensor([0, 11, 0, 0, 11])
    ids = flatten_ids(k, j, m)
    assert ids.tolist() == [0, 11, 12, 196596, 196607]
    assert int(ids.max()) == K * m - 1 == 196607
    k2, j2 = unflatten_ids(ids, m)
    assert k2.tolist() == k.tolist() and j2.tolist() == j.tolist()
    all_ids = torch.arange(K * m)
    k3, j3 = unflatten_ids(all_ids, m)
    assert int(k3.max()) == K - 1 and int(j3.max()) == m - 1
    assert torch.equal(flatten_ids(k3, j3, m), all_ids)


def test_errors():
    """Pixel id >= m or negative, negative ids, float dtypes, shape mismatch and m < 1 are rejected."""
    k = torch.tensor([1, 2])
    with pytest.raises(ValueError):
        flatten_ids(k, torch.tensor([0, 12]), 12)
    with pytest.raises(ValueError):
        flatten_ids(k, torch.tensor([0, -1]), 12)
    with pytest.raises(ValueError):
        flatten_ids(torch.tensor([-1, 2]), torch.tensor([0, 1]), 12)
    with pytest.raises(ValueError):
        flatten_ids(k, torch.tensor([0, 1, 2]), 12)
    with pytest.raises(ValueError):
        flatten_ids(k, torch.tensor([0, 1]), 0)
    with pytest.raises(TypeError):
        flatten_ids(k.float(), torch.tensor([0, 1]), 12)
    with pytest.raises(TypeError):
        flatten_ids(k, torch.tensor([0.0, 1.0]), 12)
    with pytest.raises(ValueError):
        unflatten_ids(torch.tensor([5, -3]), 12)
    with pytest.raises(TypeError):
        unflatten_ids(torch.tensor([5.0]), 12)
    with pytest.raises(ValueError):
        unflatten_ids(torch.tensor([5]), 0)
