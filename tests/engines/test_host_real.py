"""The engine host with real engines on generated models: memory really goes back, models run in parallel."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import REPO_ROOT
from tests.fixtures.cache import install_snapshot
from tests.fixtures.whisper import build_whisper

pytestmark = pytest.mark.slow


def run_probe(executor: str, model_dir: Path, mode: str, requests: int = 2) -> dict[str, Any]:
    """tests/engines/memory_probe.py in a fresh interpreter: the server's memory, parent plus workers."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO_ROOT / "src"), str(REPO_ROOT)])}
    command = [sys.executable, "-m", "tests.engines.memory_probe", "--executor", executor]
    command += ["--model-dir", str(model_dir), "--mode", mode, "--requests", str(requests)]
    done = subprocess.run(command, env=env, cwd=REPO_ROOT, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    figures: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return figures


def test_unloading_a_whisper_worker_gives_the_memory_back(tmp_path: Path) -> None:
    model_dir = install_snapshot(build_whisper("tiny"), tmp_path, "whisper-tiny")

    figures = run_probe("whisper", model_dir, "process")

    assert figures["worker_pid"] is not None
    assert figures["loaded"] - figures["idle"] > 100 * 1024 * 1024, figures  # the model was resident
    assert figures["unloaded"] <= figures["idle"] * 1.15, figures
