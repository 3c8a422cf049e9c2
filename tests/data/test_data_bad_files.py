"""BadDataTracker: counting, where the details go (log file or DEBUG), the one-line error with the
count, first bad file and where the details are, threshold with min_seen, final check, validation,
and the error staying one line when it comes back from a DataLoader worker."""

import logging

import pytest
import torch
from torch.utils.data import DataLoader, Dataset

from semhitok.data import BadDataError, BadDataTracker


def test_counts_and_logs_at_debug_without_a_log_file(caplog):
    t = BadDataTracker(max_bad_fraction=0.5, min_seen=10)
    with caplog.at_level(logging.DEBUG, logger="semhitok.data"):
        t.record_good()
        t.record_bad("a.jpg", "truncated\nfile")  # a multi-line reason is folded onto one line
    assert (t.seen, t.bad, t.first_bad) == (2, 1, ("a.jpg", "truncated file"))
    assert t.bad_fraction == 0.5
    rec = [r for r in caplog.records if r.name == "semhitok.data"]
    assert [(r.levelno, r.getMessage()) for r in rec] == [(logging.DEBUG, "skipped undecodable file a.jpg: truncated file")]


def test_log_file_gets_every_bad_file_and_nothing_is_logged_above_debug(tmp_path, caplog):
    log = tmp_path / "bad_files.log"
    t = BadDataTracker(max_bad_fraction=1.0, min_seen=1, log_path=log)
    with caplog.at_level(logging.DEBUG, logger="semhitok.data"):
        for i in range(40):
            t.record_bad(f"f{i}.png", "not an image")
    assert log.read_text().splitlines() == [f"skipped undecodable file f{i}.png: not an image" for i in range(40)]
    assert not [r for r in caplog.records if r.name == "semhitok.data"]


def test_threshold_waits_for_min_seen_and_message_is_one_line(tmp_path):
    t = BadDataTracker(max_bad_fraction=0.1, min_seen=5)
    for i in range(4):
        t.record_bad(f"f{i}", "bad")  # 100% bad, but only 4 seen: no error yet
    with pytest.raises(BadDataError) as info:
        t.record_bad("f4", "bad")
    assert str(info.value) == (
        "5 of 5 files could not be decoded (100.0% > threshold 10.0%); first: f0: bad; "
        "every bad file is logged at DEBUG level by the 'semhitok.data' logger"
    )
    logged = BadDataTracker(max_bad_fraction=0.0, min_seen=1, log_path=tmp_path / "b.log")
    with pytest.raises(BadDataError, match=r"^1 of 1 files .*first: x: y; every bad file is listed in .*b\.log$"):
        logged.record_bad("x", "y")


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


def test_unwritable_log_does_not_crash(tmp_path, caplog):
    t = BadDataTracker(max_bad_fraction=1.0, log_path=tmp_path / "no" / "such" / "dir.log")
    with caplog.at_level(logging.DEBUG, logger="semhitok.data"):
        t.record_bad("a.png", "broken")
    assert t.bad == 1 and "a.png" in caplog.text


@pytest.mark.parametrize(
    "kwargs", [{"max_bad_fraction": 1.5}, {"max_bad_fraction": -0.1}, {"min_seen": 0}, {"min_seen": 2.0}]
)
def test_validation(kwargs):
    with pytest.raises(ValueError):
        BadDataTracker(**kwargs)
    with pytest.raises(TypeError):
        BadDataTracker(log_path=3)  # type: ignore[arg-type]


class _AllBad(Dataset):
    """Every item is a bad file, judged by the tracker copy of the worker process reading it."""

    def __init__(self, log_path):
        self.tracker = BadDataTracker(max_bad_fraction=0.5, min_seen=2, log_path=log_path)

    def __len__(self):
        return 8

    def __getitem__(self, i):
        self.tracker.record_bad(f"img{i}.png", "truncated")
        return torch.zeros(1)


def test_error_from_a_dataloader_worker_stays_one_line(tmp_path):
    log = tmp_path / "bad_files.log"
    loader = DataLoader(_AllBad(log), batch_size=2, num_workers=2)
    with pytest.raises(BadDataError) as info:
        list(loader)
    # DataLoader re-creates the exception from a message that holds the worker's traceback.
    message = str(info.value)
    assert "\n" not in message and "Traceback" not in message
    assert message.startswith("2 of 2 files could not be decoded (100.0% > threshold 50.0%); first: img")
    assert message.endswith(f"every bad file is listed in {log}")
    # Each worker's copy of the tracker wrote its own lines to the shared log.
    lines = log.read_text().splitlines()
    assert len(lines) >= 2 and all(line.startswith("skipped undecodable file img") for line in lines)
