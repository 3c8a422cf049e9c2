"""`semhitok visualize`: one self-contained HTML page whose every picture is an embedded PNG."""

import base64
import io
import json
import re
from pathlib import Path

from PIL import Image

from semhitok.cli.main import main

PHOTOS = Path(__file__).resolve().parents[2] / "assets" / "photos"


def test_visualize_writes_a_self_contained_page(tmp_path, capsys):
    out = tmp_path / "vis"
    assert main(["visualize", "--preset", "tiny", "--data", str(PHOTOS), "-o", str(out), "--top-codes", "4", "--per-code", "4"]) == 0
    page = (out / "index.html").read_text()
    sources = re.findall(r'<img src="([^"]+)"', page)
    assert len(sources) >= 5  # reconstructions, code maps, gallery, sub-codes, usage
    for src in sources:
        assert src.startswith("data:image/png;base64,")  # nothing refers outside the file
        image = Image.open(io.BytesIO(base64.b64decode(src.split(",", 1)[1])))
        image.verify()
    assert "UNTRAINED" in page
    stats = json.loads((out / "stats.json").read_text())
    assert stats["num_tokens"] == 5 * 16 and 1 <= stats["semantic_used"] <= 80
    assert {"gallery.png", "usage.png", "reconstructions.png"} <= {p.name for p in out.iterdir()}


def test_visualize_bad_data_is_one_line(tmp_path, capsys):
    assert main(["visualize", "--preset", "tiny", "--data", str(tmp_path / "missing"), "-o", str(tmp_path / "v")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) >= 1 and err[-1].startswith("semhitok: error:") and "missing" in err[-1]
    assert not (tmp_path / "v").exists()
