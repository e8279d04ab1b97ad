"""`talkies serve` in a subprocess (a real uvicorn, a real socket), for tests that must see the server
process itself survive: native crashes, hang-ups, signals.

    with live_server(tmp_path, models) as server:
        httpx.get(f"{server.url}/healthz")
        assert server.alive
        server.log()  # everything the server wrote so far (stdout + stderr)
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

REPO_ROOT = Path(__file__).resolve().parent.parent


@dataclass
class LiveServer:
    url: str
    process: subprocess.Popen[bytes]
    log_path: Path
    data_dir: Path

    @property
    def alive(self) -> bool:
        return self.process.poll() is None

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def ps(self) -> list[dict[str, Any]]:
        rows: list[dict[str, Any]] = httpx.get(f"{self.url}/api/ps", timeout=10).json()["models"]
        return rows

    def wait_idle(self, timeout: float = 60.0) -> list[dict[str, Any]]:
        """/api/ps once nothing is in flight or queued (work a hung-up client left may still finish)."""
        deadline = time.monotonic() + timeout
        while True:
            rows = self.ps()
            if all(r["in_flight"] == 0 and r["queued"] == 0 for r in rows) or time.monotonic() > deadline:
                return rows
            time.sleep(0.1)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextlib.contextmanager
def live_server(tmp_path: Path, models: dict[str, dict[str, Any]], **env: str) -> Iterator[LiveServer]:
    """Run `python -m talkies serve` on 127.0.0.1 with a registry of `models`; stop it on exit."""
    registry = tmp_path / "live-models.json"
    registry.write_text(json.dumps({"models": models}))
    data_dir = tmp_path / "live-data"
    port = free_port()
    environment = {k: v for k, v in os.environ.items() if not k.startswith("TALKIES_")}
    environment.update(
        {
            "TALKIES_HOST": "127.0.0.1",
            "TALKIES_PORT": str(port),
            "TALKIES_MODELS_FILE": str(registry),
            "TALKIES_DATA_DIR": str(data_dir),
            "TALKIES_LOG_LEVEL": "info",
            "PYTHONPATH": os.pathsep.join([str(REPO_ROOT / "src"), environment.get("PYTHONPATH", "")]),
            **env,
        }
    )
    log_path = tmp_path / "live-server.log"
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "talkies", "serve"],
            stdout=log,
            stderr=subprocess.STDOUT,
            env=environment,
            cwd=tmp_path,
        )
    server = LiveServer(f"http://127.0.0.1:{port}", process, log_path, data_dir)
    try:
        deadline = time.monotonic() + 60
        while True:
            if not server.alive:
                raise RuntimeError(f"talkies serve exited at start-up:\n{server.log()}")
            with contextlib.suppress(httpx.TransportError):
                if httpx.get(f"{server.url}/healthz", timeout=2).status_code == 200:
                    break
            if time.monotonic() > deadline:
                raise RuntimeError(f"talkies serve did not answer /healthz within 60s:\n{server.log()}")
            time.sleep(0.1)
        yield server
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(30)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
