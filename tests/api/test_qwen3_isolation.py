"""Qwen3-TTS in its default worker process: a request loads it there, unloading ends the worker and the
memory comes back (real qwen-tts code on the tiny random CustomVoice checkpoint)."""

from __future__ import annotations

import json
import time
from pathlib import Path

import httpx
import psutil
import pytest

from talkies.api.app import create_app
from talkies.settings import load_settings
from tests.engines.memory_probe import total_rss
from tests.fixtures.qwen3 import install_qwen3
from tests.server import serve

pytestmark = pytest.mark.slow

SLUG = "qwen3-tts-0.6b-custom"


def test_unload_ends_the_worker_and_returns_its_memory(tmp_path: Path) -> None:
    install_qwen3(tmp_path / "data", SLUG)
    entry = {"executor": "qwen3_tts", "repo": "test/q", "qwen3_mode": "custom_voice", "isolation": "process"}
    (tmp_path / "models.json").write_text(json.dumps({"models": {SLUG: entry}}))
    settings = load_settings(
        models_file=tmp_path / "models.json", data_dir=tmp_path / "data", sweeper_interval=0, device="cpu",
        cpu_threads=1,
    )  # fmt: skip
    with serve(create_app(settings)) as base_url, httpx.Client(base_url=base_url, timeout=600) as client:
        body = {
            "model": SLUG,
            "input": "Hello.",
            "voice": "Ryan",
            "max_new_tokens": 4,
            "response_format": "pcm",
        }
        helpers = {c.pid for c in psutil.Process().children(recursive=True)}  # e.g. the resource tracker
        response = client.post("/v1/audio/speech", json=body)
        assert response.status_code == 200, response.text
        assert response.content
        workers = [c for c in psutil.Process().children(recursive=True) if c.pid not in helpers]
        assert workers  # the model runs in a worker process, not here
        loaded = total_rss()
        assert client.delete(f"/api/ps/{SLUG}").status_code == 200
        deadline = time.monotonic() + 60
        while any(w.is_running() and w.status() != psutil.STATUS_ZOMBIE for w in workers):
            assert time.monotonic() < deadline, "the worker outlived its unload"
            time.sleep(0.2)
        assert total_rss() < loaded - 100 * 1024 * 1024  # torch + the model went away with the worker
