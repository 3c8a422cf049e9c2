"""shard_indices (map-style, per rank) and worker_shard (iterable, per rank x worker)."""

import logging
import math

import pytest

from semhitok.data import shard_indices, worker_shard


@pytest.mark.parametrize("n,world", [(10, 1), (10, 2), (10, 3), (7, 4), (3, 5), (1, 2), (64, 8)])
@pytest.mark.parametrize("shuffle", [True, False])
def test_shard_indices_cover_everything_with_equal_lengths(n, world, shuffle):
    parts = [shard_indices(n, r, world, seed=3, epoch=1, shuffle=shuffle) for r in range(world)]
    assert {len(p) for p in parts} == {math.ceil(n / world)}
    flat = [i for p in parts for i in p]
    assert set(flat) == set(range(n))
    assert len(flat) - n == math.ceil(n / world) * world - n  # only the padding repeats
    if n % world == 0:
        assert sorted(flat) == list(range(n))  # an exact partition


def test_shard_indices_deterministic_and_epoch_dependent():
    a = shard_indices(100, 1, 4, seed=0, epoch=0)
    assert a == shard_indices(100, 1, 4, seed=0, epoch=0)
    assert a != shard_indices(100, 1, 4, seed=0, epoch=1)
    assert shard_indices(10, 0, 2, shuffle=False) == [0, 2, 4, 6, 8]


def test_shard_indices_edge_cases():
    assert shard_indices(0, 0, 2) == []
    with pytest.raises(ValueError):
        shard_indices(5, 2, 2)
    with pytest.raises(ValueError):
        shard_indices(-1, 0, 1)


def test_worker_shard_partitions_over_ranks_and_workers():
    shards = [f"s{i}" for i in range(10)]
    got = [worker_shard(shards, r, 2, w, 2) for r in range(2) for w in range(2)]
    assert sorted(s for g in got for s in g) == sorted(shards)
    assert got[0] == ["s0", "s4", "s8"]  # rank 0 worker 0 = global worker 0
    assert got[3] == ["s3", "s7"]  # rank 1 worker 1 = global worker 3


def test_worker_shard_with_fewer_shards_than_workers_warns(caplog):
    with caplog.at_level(logging.WARNING, logger="semhitok.data"):
        assert worker_shard(["a", "b"], 1, 2, 1, 2) == []
    assert "no shard" in caplog.text
    with pytest.raises(ValueError):
        worker_shard(["a"], 0, 1, 2, 2)
