"""Fixtures for the process-engine tests: real children (a script server, a second talkies), a real
outer talkies on a uvicorn socket, and a check of the process table when the session ends."""

from __future__ import annotations

import contextlib
import json
import os
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import psutil
import pytest

from talkies.api.app import create_app
from talkies.settings import load_settings
from tests.api.audio_helpers import VOICE
from tests.server import serve

HERE = Path(__file__).resolve().parent
SCRIPT = str(HERE / "script_server.py")
UPSTREAM = str(HERE / "upstream_talkies.py")
PY = sys.executable


def script_model(modality: str = "tts", mode: str = "ok", **fields: Any) -> dict[str, Any]:
    """A `process` entry running the script server in `mode`."""
    entry: dict[str, Any] = {
        "executor": "process",
        "modality": modality,
        "cmd": f"{PY} {SCRIPT}\n  # the port talkies picked\n  --port ${{PORT}}\n  --mode {mode}",
        "unloadTimeout": 2,
        "healthCheckTimeout": 30,
    }
    entry.update(fields)
    return entry


def write_upstream_registry(path: Path) -> Path:
    """The weight-free models the upstream talkies serves (espeak-ng also answers to `tts-1`)."""
    path.write_text(
        json.dumps(
            {
                "models": {
                    "pocketsphinx-en-us": {"executor": "pocketsphinx", "aliases": ["whisper-1"]},
                    "espeak-ng": {"executor": "espeak", "default_voice": VOICE, "aliases": ["tts-1"]},
                }
            }
        )
    )
    return path


def upstream_model(tmp: Path, modality: str, **fields: Any) -> dict[str, Any]:
    """A `process` entry running a second talkies on the weight-free engines."""
    registry = write_upstream_registry(tmp / "upstream-models.json")
    entry: dict[str, Any] = {
        "executor": "process",
        "modality": modality,
        "cmd": [PY, UPSTREAM, "serve", "--port", "${PORT}"],
        "env": [
            f"TALKIES_MODELS_FILE={registry}",
            f"TALKIES_DATA_DIR={tmp / 'upstream-data'}",
            "TALKIES_ENGINE_ISOLATION=inprocess",
            "TALKIES_DEVICE=cpu",
            "TALKIES_LOG_LEVEL=warning",
        ],
        "checkEndpoint": "/healthz",
        "unloadTimeout": 5,
        "healthCheckTimeout": 60,
    }
    entry.update(fields)
    return entry


@pytest.fixture
def outer(tmp_path: Path) -> Callable[..., contextlib.AbstractContextManager[str]]:
    """`with outer(models, groups=..., **settings) as url`: an outer talkies serving `models`."""

    @contextlib.contextmanager
    def start(models: dict[str, Any], groups: dict[str, Any] | None = None, **settings: Any) -> Iterator[str]:
        body: dict[str, Any] = {"models": models}
        if groups:
            body["groups"] = groups
        registry = tmp_path / "outer-models.json"
        registry.write_text(json.dumps(body))
        settings.setdefault("models_file", registry)
        settings.setdefault("data_dir", tmp_path / "outer-data")
        settings.setdefault("sweeper_interval", 0)
        settings.setdefault("device", "cpu")
        # Children see an allow-listed environment: pass the session's mark (and this checkout's code)
        settings.setdefault("child_env", (CHILD_MARK, "PYTHONPATH"))
        app = create_app(load_settings(**settings))
        with serve(app) as url:
            yield url

    return start


def ps_row(client: httpx.Client, model: str) -> dict[str, Any] | None:
    for row in client.get("/api/ps").json()["models"]:
        if row["model"] == model:
            return dict(row)
    return None


def wait_for(predicate: Callable[[], bool], limit: float = 30.0) -> None:
    """Poll until `predicate()` holds (a bound against hanging, not a timing assertion)."""
    deadline = time.monotonic() + limit
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached in time")
        time.sleep(0.05)


def pid_gone(pid: int) -> bool:
    try:
        proc = psutil.Process(pid)
        return proc.status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


CHILD_MARK = "TALKIES_TEST_CHILD_OF"
"""Set in the environment while a test of this folder runs: every process a test starts (script servers,
upstream talkies, watchdogs, anything they start in turn) inherits it, so the process table says which
processes are ours, and no other session's process (other worktrees share this machine) is ever taken
for one."""
SESSION_TAG = f"{os.getpid()}-{uuid.uuid4().hex[:12]}"


def _environ(pid: int) -> bytes:
    try:
        return Path(f"/proc/{pid}/environ").read_bytes()
    except OSError:  # gone, or not ours to read
        return b""


def _interpreter_helper(proc: psutil.Process) -> bool:
    """multiprocessing's resource tracker: started by the first spawn in this interpreter, shared by the
    whole session, it ends when the interpreter does (not a process any test started and left behind)."""
    try:
        return proc.ppid() == os.getpid() and "multiprocessing.resource_tracker" in " ".join(proc.cmdline())
    except psutil.Error:
        return False


def our_children() -> list[psutil.Process]:
    """Live processes (zombies aside) that carry this session's mark in their environment."""
    mark = f"{CHILD_MARK}={SESSION_TAG}".encode()
    found = []
    for proc in psutil.process_iter(["status"]):
        if proc.pid == os.getpid() or proc.info["status"] == psutil.STATUS_ZOMBIE:
            continue
        if mark in _environ(proc.pid).split(b"\0") and not _interpreter_helper(proc):
            found.append(proc)
    return found


@pytest.fixture(autouse=True)
def _mark_children(monkeypatch: pytest.MonkeyPatch) -> None:
    """Children started during a test inherit the session's mark (see CHILD_MARK)."""
    monkeypatch.setenv(CHILD_MARK, SESSION_TAG)


def _describe(proc: psutil.Process) -> str:
    try:
        return f"pid {proc.pid}: {' '.join(proc.cmdline())}"
    except psutil.Error:
        return f"pid {proc.pid}"


@pytest.fixture(scope="session", autouse=True)
def _no_orphans() -> Iterator[None]:
    """After the session, no process any test started is still running (the process table is read)."""
    yield
    deadline = time.monotonic() + 15
    while our_children() and time.monotonic() < deadline:
        time.sleep(0.1)
    left = our_children()
    described = [_describe(p) for p in left]
    for proc in left:
        with contextlib.suppress(psutil.Error):
            proc.kill()
    assert not left, f"processes the tests started are still running after the session: {described}"
