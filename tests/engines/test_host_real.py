"""The engine host with real engines on generated models: memory really goes back, models run in parallel."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.engines.memory_probe import run_probe
from tests.fixtures.cache import install_snapshot
from tests.fixtures.whisper import build_whisper

pytestmark = pytest.mark.slow


def test_unloading_a_whisper_worker_gives_the_memory_back(tmp_path: Path) -> None:
    model_dir = install_snapshot(build_whisper("tiny"), tmp_path, "whisper-tiny")

    figures = run_probe("whisper", model_dir, "process")

    assert figures["worker_pid"] is not None
    assert figures["loaded"] - figures["idle"] > 100 * 1024 * 1024, figures  # the model was resident
    assert figures["unloaded"] <= figures["idle"] * 1.15, figures
