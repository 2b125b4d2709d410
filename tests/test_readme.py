"""The README's snippet runs as printed."""

import pathlib
import re

import pytest


@pytest.mark.slow
def test_readme_snippet_runs(capsys):
    text = (pathlib.Path(__file__).parents[1] / "README.md").read_text()
    blocks = re.findall(r"```python\n(.*?)```", text, flags=re.S)
    assert len(blocks) == 1, "the README has one snippet"
    namespace = {}
    exec(compile(blocks[0], "README.md", "exec"), namespace)
    assert namespace["g"].shape == namespace["scene"].objects.position.shape
    info = namespace["info"]
    assert bool(info.converged) and int(info.iterations) >= 1
    assert float(info.residual) <= 1e-5 and float(info.val_loss) < 0.01
    printed = capsys.readouterr().out.split()
    assert printed[-1] == "True"
