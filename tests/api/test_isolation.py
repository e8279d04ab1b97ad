"""The pool and the API with engines in worker processes: /api/ps shows each worker, every unload path
(DELETE /api/ps, /unload, the idle sweeper) ends it, and a crashed worker costs one request and a reload.

The engines are the test engines of tests/engines/fake_engines.py, but the processes, pipes and the pool
are real: the executor table is pointed at them and the default engine factory is used.
"""

from __future__ import annotations

import dataclasses
import os
from typing import Any

import anyio
import numpy as np
import psutil
import pytest
from fastapi import FastAPI

from talkies.api.app import create_app
from talkies.engines import EXECUTORS
from talkies.engines.base import SpeechRequest, TranscriptionRequest
from talkies.errors import EngineTimeoutError
from talkies.workers import ProcessEngine
from tests.fakes import FakeClock
from tests.server import asgi_client

pytestmark = pytest.mark.anyio

MODELS = {
    "asr": {"executor": "pocketsphinx", "isolation": "process"},
    "tts": {"executor": "espeak", "isolation": "process"},
}


@pytest.fixture(autouse=True)
def _engine_isolation() -> None:
    """These tests choose isolation per model themselves (overrides tests/api/conftest.py)."""


@pytest.fixture(autouse=True)
def fake_targets(monkeypatch: pytest.MonkeyPatch) -> None:
    targets = {"pocketsphinx": "EchoTranscriber", "espeak": "ChunkSynthesizer"}
    for executor, name in targets.items():
        info = dataclasses.replace(EXECUTORS[executor], target=f"tests.engines.fake_engines:{name}")
        monkeypatch.setitem(EXECUTORS, executor, info)


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def app(make_settings: Any, clock: FakeClock) -> FastAPI:
    settings = make_settings(models=MODELS, max_loaded_models=2, model_ttl=60)
    app = create_app(settings, clock=clock)

    @app.post("/test/transcribe/{slug}")
    async def transcribe(slug: str, prompt: str = "") -> dict[str, str]:
        request = TranscriptionRequest(audio=np.zeros(1600, np.float32), prompt=prompt or None)
        async with app.state.pool.acquire(slug) as engine:
            result = await anyio.to_thread.run_sync(engine.transcribe, request)
        return {"text": result.text}

    return app


async def _load(app: FastAPI, slug: str) -> int:
    async with app.state.pool.acquire(slug) as engine:
        assert isinstance(engine, ProcessEngine)
        pid = engine.worker_pid
    assert pid is not None
    return pid


async def _ps(client: Any) -> dict[str, dict[str, Any]]:
    return {row["model"]: row for row in (await client.get("/api/ps")).json()["models"]}


async def test_ps_shows_each_worker_pid_and_rss(app: FastAPI) -> None:
    async with asgi_client(app) as client:
        pids = {slug: await _load(app, slug) for slug in ("asr", "tts")}
        rows = await _ps(client)
        assert len(set(pids.values())) == 2
        for slug, pid in pids.items():
            assert rows[slug]["pid"] == pid != os.getpid()
            assert psutil.Process(pid).ppid() == os.getpid()
            assert rows[slug]["rss_bytes"] == pytest.approx(psutil.Process(pid).memory_info().rss, rel=0.5)
            assert rows[slug]["rss_bytes"] > 10 * 1024 * 1024  # an interpreter with numpy
    for pid in pids.values():  # the lifespan's pool.close() ended the workers
        assert not psutil.pid_exists(pid)


async def test_every_unload_path_ends_the_worker(app: FastAPI, clock: FakeClock) -> None:
    pool = app.state.pool
    async with asgi_client(app) as client:
        asr, tts = await _load(app, "asr"), await _load(app, "tts")
        assert (await client.delete("/api/ps/asr")).status_code == 200
        assert not psutil.pid_exists(asr)
        assert psutil.pid_exists(tts)

        assert (await client.post("/unload")).json() == {"unloaded": ["tts"]}
        assert not psutil.pid_exists(tts)

        asr = await _load(app, "asr")
        clock.advance(61)
        assert await pool.sweep_once() == ["asr"]
        assert not psutil.pid_exists(asr)
        assert await _ps(client) == {}


async def test_a_crashed_worker_costs_one_request_and_the_model_reloads(app: FastAPI) -> None:
    async with asgi_client(app) as client:
        first = await _load(app, "asr")
        crashed = await client.post("/test/transcribe/asr", params={"prompt": "crash"})
        assert crashed.status_code == 500
        error = crashed.json()["error"]
        assert error["code"] == "worker_crashed"
        assert "model 'asr'" in error["message"]
        assert "SIGKILL" in error["message"]
        assert "asr" not in await _ps(client)  # marked unloaded

        again = await client.post("/test/transcribe/asr")
        assert again.status_code == 200
        second = (await _ps(client))["asr"]["pid"]
        assert second != first
        assert again.json()["text"].endswith(f"pid={second}")


async def test_a_hung_worker_is_killed_and_the_model_reloads(make_settings: Any) -> None:
    settings = make_settings(models=MODELS, engine_timeout=1)
    pool = create_app(settings).state.pool
    pids: list[int] = []

    async def hang() -> None:
        async with pool.acquire("asr") as engine:
            pids.append(engine.worker_pid)
            request = TranscriptionRequest(np.zeros(16), prompt="hang")
            await anyio.to_thread.run_sync(engine.transcribe, request)

    with pytest.raises(EngineTimeoutError, match="TALKIES_ENGINE_TIMEOUT"):
        await hang()
    [pid] = pids
    assert not psutil.pid_exists(pid)
    assert not pool.is_loaded("asr")
    async with pool.acquire("asr") as engine:
        result = await anyio.to_thread.run_sync(engine.transcribe, TranscriptionRequest(np.zeros(16)))
    assert result.text.startswith("16 ")
    await pool.close()


async def test_streaming_synthesis_through_the_pool(app: FastAPI) -> None:
    pool = app.state.pool
    async with pool.acquire("tts") as engine:
        chunks = await anyio.to_thread.run_sync(
            lambda: list(engine.synthesize(SpeechRequest("hi", "alpha", options={"chunks": 4})))
        )
    assert [int(c.pcm[0]) for c in chunks] == [0, 1, 2, 3]
    await pool.close()
