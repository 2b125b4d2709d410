"""python -m render.demo (`./dev.sh render-demo`): random scenes through the JAX renderer."""

import json

from render import demo


def test_demo_writes_contact_sheet_and_timing(tmp_path, capsys):
    timing = demo.main(["--num", "3", "--objects", "2", "--resolution", "16", "--out", str(tmp_path)])
    sheet = tmp_path / "contact_sheet.png"
    assert sheet.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    saved = json.loads((tmp_path / "timing.json").read_text())
    assert saved == json.loads(json.dumps(timing))
    assert saved["scenes"] == 3 and saved["images_per_s"] > 0 and saved["compile_s"] > 0
    assert "rendered 3 scenes at 16x16" in capsys.readouterr().out
