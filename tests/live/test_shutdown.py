"""SIGTERM drains a real `talkies serve` (issue 19, item 6).

The server runs two models with real children: `stand-in`, a `process` model whose server is the process
tests' script server (it streams a speech answer in chunks with a gap between them, so a request stays in
flight for as long as the test asks), and espeak-ng preloaded into a worker process. While a long speech
request streams, the test sends SIGTERM and checks: /readyz answers 503 `draining`, /healthz still 200, a
new request 503 `shutting_down` with Retry-After; the long request completes with every byte; the process
exits and leaves no child running. With a grace shorter than the request, the request is cut when the grace
is over and the process still exits, children reaped.
"""

from __future__ import annotations

import signal
import sys
import threading
from pathlib import Path
from typing import Any

import httpx
import psutil
import pytest

from tests.live_server import LiveServer, live_server

pytestmark = pytest.mark.slow

SCRIPT = Path(__file__).resolve().parent.parent / "process" / "script_server.py"
MODELS: dict[str, dict[str, Any]] = {
    "stand-in": {
        "executor": "process",
        "modality": "tts",
        "cmd": [sys.executable, str(SCRIPT), "--port", "${PORT}"],
        "unloadTimeout": 5,
        "healthCheckTimeout": 30,
    },
    "espeak-ng": {"executor": "espeak", "isolation": "process"},
}
SETTINGS = {"TALKIES_PRELOAD": "espeak-ng,stand-in", "TALKIES_MAX_LOADED_MODELS": "2"}


class _LongSpeech:
    """A streamed speech request in a thread: `first` is set once its first bytes arrived."""

    def __init__(self, url: str, chunks: int, chunk_bytes: int = 4000, gap: float = 0.1) -> None:
        self.url = url
        self.expected = chunks * chunk_bytes
        self.body = {"model": "stand-in", "input": "x", "chunks": chunks, "chunk_bytes": chunk_bytes}
        self.body["gap"] = gap
        self.first = threading.Event()
        self.status = 0
        self.received = 0
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        try:
            with httpx.stream("POST", f"{self.url}/v1/audio/speech", json=self.body, timeout=120) as answer:
                self.status = answer.status_code
                for chunk in answer.iter_raw():
                    self.received += len(chunk)
                    self.first.set()
        except BaseException as exc:
            self.error = exc
        finally:
            self.first.set()


def _children(server: LiveServer) -> list[psutil.Process]:
    return psutil.Process(server.process.pid).children(recursive=True)


def _wait_for_draining(server: LiveServer) -> httpx.Response:
    for _ in range(300):
        ready = httpx.get(f"{server.url}/readyz", timeout=10)
        if ready.status_code == 503:
            return ready
        threading.Event().wait(0.05)
    raise AssertionError(f"/readyz never went 503 after SIGTERM:\n{server.log()[-3000:]}")


def test_sigterm_drains_a_request_in_flight_and_reaps_every_child(tmp_path: Path) -> None:
    env = {**SETTINGS, "TALKIES_SHUTDOWN_GRACE": "120"}
    with live_server(tmp_path, MODELS, **env) as server:
        ready = httpx.get(f"{server.url}/readyz", timeout=10)
        assert ready.status_code == 200, ready.text
        speech = _LongSpeech(server.url, chunks=60)  # ~6 s upstream
        assert speech.first.wait(60)
        assert speech.error is None, speech.error
        children = _children(server)
        assert len(children) >= 2, "the espeak worker and the stand-in's server"

        server.process.send_signal(signal.SIGTERM)
        draining = _wait_for_draining(server)
        refused = httpx.post(
            f"{server.url}/v1/audio/speech", json={"model": "espeak-ng", "input": "hello"}, timeout=10
        )
        health = httpx.get(f"{server.url}/healthz", timeout=10)
        assert speech.thread.is_alive(), "the long request was still in flight during the checks"

        speech.thread.join(120)
        server.process.wait(120)
        log = server.log()
    assert draining.json()["reason"] == "draining"
    assert draining.json()["in_flight"] >= 1
    assert refused.status_code == 503
    assert refused.json()["error"]["code"] == "shutting_down"
    assert int(refused.headers["retry-after"]) > 0
    assert health.status_code == 200
    assert speech.error is None, speech.error
    assert (speech.status, speech.received) == (200, speech.expected), "the request in flight completed"
    assert server.process.returncode in (0, -signal.SIGTERM), log[-3000:]
    _, alive = psutil.wait_procs(children, timeout=30)
    assert alive == [], f"children left running: {alive}"
    assert "drained: no request in flight" in log
    assert "Application shutdown complete" in log
    assert "Traceback" not in log, log[-3000:]


def test_a_request_longer_than_the_grace_is_cut_and_the_server_still_exits(tmp_path: Path) -> None:
    env = {**SETTINGS, "TALKIES_SHUTDOWN_GRACE": "1"}
    with live_server(tmp_path, MODELS, **env) as server:
        speech = _LongSpeech(server.url, chunks=3000)  # ~5 minutes upstream: only the grace can end it
        assert speech.first.wait(60)
        assert speech.error is None, speech.error
        children = _children(server)
        server.process.send_signal(signal.SIGTERM)
        server.process.wait(60)  # far sooner than the request; a hang fails here
        speech.thread.join(60)
        log = server.log()
    assert speech.received < speech.expected
    assert "TALKIES_SHUTDOWN_GRACE (1s) is over with 1 request(s) in flight" in log, log[-3000:]
    assert "Application shutdown complete" in log
    _, alive = psutil.wait_procs(children, timeout=30)
    assert alive == [], f"children left running: {alive}"
