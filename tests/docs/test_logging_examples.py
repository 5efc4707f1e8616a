"""The loguru and stdlib logging examples of docs/integrations/logging.md print what they show.

Each example is run as is, as a module named ``app`` in a fresh interpreter, and the line it prints
must be the line its last comment shows (only the timestamp may differ).
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
DOC = ROOT / "docs" / "integrations" / "logging.md"
TIMESTAMP = r"\d{4}-\d{2}-\d{2} \d{2}:\d{2}:\d{2}[.,]\d{3}"


def example(heading: str) -> str:
    text = DOC.read_text(encoding="utf-8")
    start = text.index(f"## {heading}\n")
    return text[start:].split("```python\n", 1)[1].split("```", 1)[0]


@pytest.mark.parametrize("heading", ["loguru", "stdlib logging"])
def test_the_example_prints_the_documented_line(heading: str, tmp_path: Path) -> None:
    code = example(heading)
    documented = [line[2:] for line in code.splitlines() if re.match(rf"# {TIMESTAMP} ", line)]
    assert len(documented) == 1, code
    (tmp_path / "app.py").write_text(code, encoding="utf-8")
    done = subprocess.run(
        [sys.executable, "-c", "import app"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    (line,) = done.stderr.splitlines()
    shown = documented[0]
    stamp = re.match(TIMESTAMP, shown)
    assert stamp is not None
    assert re.fullmatch(TIMESTAMP + re.escape(shown[stamp.end() :]), line), (line, shown)
