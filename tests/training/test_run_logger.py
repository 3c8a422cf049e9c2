"""RunLogger: a mean over nothing (NaN) is null in metrics.jsonl, absent from TensorBoard, "-" on the console."""

import json
import math

from semhitok.training.run_parts import RunLogger


def test_nan_metric_is_null_in_the_file_and_a_dash_on_the_console(tmp_path, capsys):
    log = RunLogger(tmp_path, enabled=True, quiet=True, total=1, initial=0, stage="mllm",
                    shown=("loss", "text_nll", "image_nll"), short={"text_nll": "txt", "image_nll": "img"})
    log.step(1, {"step": 1, "loss": 8.25, "text_nll": math.nan, "image_nll": 8.25}, force=True)
    log.close()
    assert json.loads((tmp_path / "metrics.jsonl").read_text()) == {"step": 1, "loss": 8.25, "text_nll": None, "image_nll": 8.25}
    assert "step 1 loss=8.25 txt=- img=8.25" in capsys.readouterr().out

    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(tmp_path / "tensorboard"))
    events.Reload()
    assert set(events.Tags()["scalars"]) == {"loss", "image_nll"}
