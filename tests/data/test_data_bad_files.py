"""BadDataTracker: counting, logging, threshold with min_seen, final check, validation."""

import logging

import pytest

from semhitok.data import BadDataError, BadDataTracker


def test_counts_and_logs(caplog):
    t = BadDataTracker(max_bad_fraction=0.5, min_seen=10)
    with caplog.at_level(logging.WARNING, logger="semhitok.data"):
        t.record_good()
        t.record_bad("a.jpg", "truncated")
    assert (t.seen, t.bad, t.first_bad) == (2, 1, ("a.jpg", "truncated"))
    assert t.bad_fraction == 0.5
    rec = [r for r in caplog.records if r.name == "semhitok.data"]
    assert rec and rec[0].levelno == logging.WARNING and "a.jpg" in rec[0].getMessage() and "truncated" in rec[0].getMessage()


def test_threshold_waits_for_min_seen():
    t = BadDataTracker(max_bad_fraction=0.1, min_seen=5)
    for i in range(4):
        t.record_bad(f"f{i}", "bad")  # 100% bad, but only 4 seen: no error yet
    with pytest.raises(BadDataError) as info:
        t.record_bad("f4", "bad")
    assert str(info.value) == "5 of 5 files could not be decoded (100.0% > threshold 10.0%); first: f0: bad"


def test_under_threshold_never_raises_and_final_check():
    t = BadDataTracker(max_bad_fraction=0.2, min_seen=100)
    for _ in range(9):
        t.record_good()
    t.record_bad("x", "y")
    t.check(final=True)  # 10% <= 20%
    t.record_bad("x2", "y")
    t.record_bad("x3", "y")  # 3 of 12 = 25%, below min_seen
    with pytest.raises(BadDataError, match="3 of 12"):
        t.check(final=True)


@pytest.mark.parametrize("kwargs", [{"max_bad_fraction": 1.5}, {"max_bad_fraction": -0.1}, {"min_seen": 0}, {"min_seen": 2.0}])
def test_validation(kwargs):
    with pytest.raises(ValueError):
        BadDataTracker(**kwargs)
