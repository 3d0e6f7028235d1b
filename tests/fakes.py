"""Stand-ins for the commands a provider runs, put first on PATH for one test."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest


def put_on_path(monkeypatch: pytest.MonkeyPatch, directory: Path, name: str, python_source: str) -> None:
    """`name`, a Python script, found before the real one for the rest of the test."""
    directory.mkdir(exist_ok=True)
    command = directory / name
    command.write_text(f"#!{sys.executable}\n{python_source}")
    command.chmod(0o755)
    monkeypatch.setenv("PATH", f"{directory}{os.pathsep}{os.environ['PATH']}")
