"""The README's client example really runs: ``client.py`` and the ``demo.py`` server it
starts over stdio are extracted from README.md and run as a user would (``python
client.py`` in a directory holding both)."""
from __future__ import annotations

import os
import pathlib
import re
import subprocess
import sys

REPO = pathlib.Path(__file__).resolve().parent.parent


def test_readme_client_example_runs(tmp_path: pathlib.Path) -> None:
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    for name in ("demo.py", "client.py"):
        block = re.search(rf"```python\n(# {re.escape(name)}.*?)```", readme, re.S)
        assert block, f"the README lost its {name} example"
        (tmp_path / name).write_text(block.group(1), encoding="utf-8")
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.run([sys.executable, "client.py"], cwd=tmp_path, env=env, capture_output=True,
                          text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.splitlines() == [
        "demo 2026-07-28", "{'sum': 5.0}", "contents of todo", "Please review:", "x = 1",
        "1/3", "2/3", "3/3", "done False", "Cancelled"], proc.stdout
