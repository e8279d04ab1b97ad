from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from tests.conftest import REPO_ROOT


def _env(tmp_path: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("TALKIES_")}
    env["PYTHONPATH"] = str(REPO_ROOT / "src")
    env["TALKIES_DATA_DIR"] = str(tmp_path / "data")
    env.update(extra)
    return env


def test_bad_setting_stops_start_up_with_one_line(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "talkies", "serve"],
        env=_env(tmp_path, TALKIES_QUEUE_TIMEOUT="forever"),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1
    assert "TALKIES_QUEUE_TIMEOUT='forever'" in lines[0]
    assert "3h30m5s" in lines[0]


def test_unknown_enabled_model_fails_fast_listing_catalog(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "talkies", "models"],
        env=_env(tmp_path, TALKIES_ENABLED_MODELS="whisper-large-v3,whisper-tiny"),
        capture_output=True,
        text=True,
        timeout=60,
        cwd=REPO_ROOT,
    )
    assert result.returncode == 2
    assert "whisper-tiny" in result.stderr
    assert "kokoro-82m" in result.stderr  # the catalog is listed


@pytest.mark.slow
def test_serve_with_shipped_cpu_registry(tmp_path: Path) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = _env(tmp_path, TALKIES_MODELS_FILE=str(REPO_ROOT / "models-cpu.json"), TALKIES_PORT=str(port))
    proc = subprocess.Popen(
        [sys.executable, "-m", "talkies", "serve"], env=env, stderr=subprocess.PIPE, text=True
    )
    try:
        base = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 60
        while True:
            try:
                health = httpx.get(f"{base}/healthz", timeout=2).json()
                break
            except httpx.TransportError:
                assert proc.poll() is None, proc.stderr.read() if proc.stderr else ""
                assert time.monotonic() < deadline, "server did not start"
                time.sleep(0.2)
        assert health["ok"] is True
        assert "kokoro-82m" in health["models"]
        models = httpx.get(f"{base}/v1/models").json()
        assert len(models["data"]) == len(health["models"])
        assert httpx.get(f"{base}/api/ps").json()["models"] == []
    finally:
        proc.terminate()
        _, err = proc.communicate(timeout=30)
    assert proc.returncode in (0, -15)  # uvicorn re-raises SIGTERM after a graceful shutdown
    assert "Application shutdown complete" in err
    assert "GET /healthz" in err  # one access line per request
