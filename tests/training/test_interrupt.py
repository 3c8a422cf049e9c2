"""StopSignals: the first SIGINT/SIGTERM is a request to stop after the step, the second aborts."""

import os
import signal
import threading

import pytest

from semhitok.training.errors import TrainingAborted, TrainingInterrupted
from semhitok.training.interrupt import StopSignals


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_first_signal_requests_a_stop_second_aborts(signum):
    before = signal.getsignal(signum)
    with StopSignals() as signals:
        assert signals.requested is None
        os.kill(os.getpid(), signum)
        assert signals.requested == signum  # nothing raised: the step goes on
        with pytest.raises(TrainingAborted) as aborted:
            os.kill(os.getpid(), signum)
    assert aborted.value.exit_code == 128 + signum and isinstance(aborted.value, KeyboardInterrupt)
    assert signal.getsignal(signum) is before  # the caller's handlers are back


def test_outside_the_main_thread_nothing_is_installed():
    seen = {}

    def worker():
        with StopSignals() as signals:
            seen["handler"] = signal.getsignal(signal.SIGINT)
            seen["requested"] = signals.requested

    thread = threading.Thread(target=worker)
    thread.start()
    thread.join()
    assert seen["handler"] is signal.getsignal(signal.SIGINT) and seen["requested"] is None


def test_interrupted_message_and_exit_codes(tmp_path):
    exc = TrainingInterrupted(signal.SIGTERM, 7, tmp_path / "step_00000007")
    assert exc.exit_code == 143
    assert str(exc) == f"interrupted by SIGTERM after step 7; checkpoint {tmp_path}/step_00000007; continue with --resume"
    assert TrainingInterrupted(signal.SIGINT, 1, None).exit_code == 130
