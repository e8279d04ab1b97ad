"""The engine host with real engines on generated models: memory really goes back, models run in parallel."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import anyio
import numpy as np
import psutil
import pytest

from talkies.engines import make_engine_factory
from talkies.engines.base import EngineContext, SpeechRequest, TranscriptionRequest
from talkies.engines.host import ProcessEngine
from talkies.pool import ModelPool
from talkies.registry import ModelSpec, load_registry
from talkies.settings import load_settings
from tests.engines.memory_probe import REQUEST_OPTIONS, run_probe
from tests.fixtures.cache import install_snapshot
from tests.fixtures.kokoro import install_kokoro
from tests.fixtures.speech import speech_clip
from tests.fixtures.whisper import build_whisper

pytestmark = pytest.mark.slow

MODELS = {
    "whisper-tiny": {"executor": "whisper", "repo": "test/whisper-tiny"},
    "kokoro-82m": {"executor": "kokoro", "repo": "hexgrad/Kokoro-82M"},
}


def _install(data_dir: Path, slug: str) -> Path:
    if slug == "whisper-tiny":
        return install_snapshot(build_whisper("tiny"), data_dir, slug)
    return install_kokoro(data_dir, slug)


@pytest.mark.parametrize("slug", list(MODELS))
def test_unloading_a_worker_gives_the_memory_back(tmp_path: Path, slug: str) -> None:
    """The server's memory (parent + workers) after load, requests and unload is back near idle."""
    model_dir = _install(tmp_path, slug)

    figures = run_probe(MODELS[slug]["executor"], model_dir, "process")

    assert figures["worker_pid"] is not None
    assert figures["loaded"] - figures["idle"] > 100 * 1024 * 1024, figures  # the model was resident
    assert figures["unloaded"] <= figures["idle"] * 1.15, figures


def _bounded_pool(tmp_path: Path) -> ModelPool:
    for slug in MODELS:
        _install(tmp_path / "data", slug)
    registry_file = tmp_path / "models.json"
    registry_file.write_text(json.dumps({"models": MODELS}))
    settings = load_settings(
        models_file=registry_file, data_dir=tmp_path / "data", max_loaded_models=2, cpu_threads=1
    )
    pool = ModelPool(load_registry(registry_file), settings, engine_factory=make_engine_factory(settings))
    plain_context = pool.engine_context

    def bounded(spec: ModelSpec) -> EngineContext:  # random weights: bound Whisper's decoding
        context = plain_context(spec)
        options = {**context.options, **REQUEST_OPTIONS.get(spec.executor, {})}
        return EngineContext(context.slug, context.model_dir, "cpu", 1, options)

    pool.engine_context = bounded  # type: ignore[method-assign]
    return pool


async def _best_of(runs: int, work: Callable[[], Awaitable[object]]) -> float:
    best = float("inf")
    for _ in range(runs):
        start = time.perf_counter()
        await work()
        best = min(best, time.perf_counter() - start)
    return best


def spare_cores() -> float:
    """How many cores this machine gives two CPU-bound processes at once right now (2.0 on an idle
    2-core machine, about 1.0 when neighbours keep one core busy)."""
    spin = [sys.executable, "-c", "x = 0\nfor i in range(6_000_000): x += i"]
    start = time.perf_counter()
    subprocess.run(spin, check=True)
    alone = time.perf_counter() - start
    start = time.perf_counter()
    pair = [subprocess.Popen(spin) for _ in range(2)]
    for process in pair:
        process.wait()
    return 2 * alone / (time.perf_counter() - start)


class _Pair:
    """ASR and TTS requests on two resident models in worker processes, through the pool."""

    TEXT = "Two models, two workers."  # about as much CPU as the 5 s transcription

    def __init__(self, pool: ModelPool) -> None:
        self.pool = pool
        self.audio = np.asarray(speech_clip(5.0), dtype=np.float32)
        self.pids: dict[str, int] = {}

    async def asr(self) -> None:
        async with self.pool.acquire("whisper-tiny") as engine:
            assert isinstance(engine, ProcessEngine)
            self.pids["asr"] = engine.worker_pid or 0
            request = TranscriptionRequest(audio=self.audio, language="en", word_timestamps=False)
            await anyio.to_thread.run_sync(engine.transcribe, request)

    async def tts(self) -> None:
        async with self.pool.acquire("kokoro-82m") as engine:
            assert isinstance(engine, ProcessEngine)
            self.pids["tts"] = engine.worker_pid or 0
            voice = next(v.name for v in engine.voices() if v.default)
            request = SpeechRequest(text=self.TEXT, voice=voice)
            await anyio.to_thread.run_sync(lambda: list(engine.synthesize(request)))

    async def both(self) -> None:
        async with anyio.create_task_group() as group:
            group.start_soon(self.asr)
            group.start_soon(self.tts)

    async def one_after_the_other(self) -> None:
        await self.asr()
        await self.tts()


@pytest.fixture
async def pair(tmp_path: Path) -> AsyncIterator[_Pair]:
    pair = _Pair(_bounded_pool(tmp_path))
    try:
        await pair.asr()
        await pair.tts()  # both resident (max_loaded_models=2) and warmed up
        assert {row["model"] for row in pair.pool.ps()} == set(MODELS)
        yield pair
    finally:
        await pair.pool.close()


@pytest.mark.anyio
async def test_asr_and_tts_on_two_resident_models_compute_at_the_same_time(pair: _Pair) -> None:
    """Both workers burn CPU in the same instants: neither request queues behind the other. (Holds on a
    busy machine too, where the scheduler time-slices the two workers.)"""
    workers = {name: psutil.Process(pid) for name, pid in pair.pids.items()}
    windows: list[tuple[bool, bool]] = []
    done = threading.Event()

    def sample() -> None:
        last = {name: sum(p.cpu_times()[:2]) for name, p in workers.items()}
        while not done.wait(0.05):
            now = {name: sum(p.cpu_times()[:2]) for name, p in workers.items()}
            windows.append((now["asr"] > last["asr"], now["tts"] > last["tts"]))
            last = now

    sampler = threading.Thread(target=sample)
    sampler.start()
    try:
        await pair.both()
    finally:
        done.set()
        sampler.join()

    busy = [w for w in windows if any(w)]
    together = [w for w in windows if all(w)]
    assert len(together) >= 3, windows
    assert len(together) >= 0.25 * len(busy), windows


@pytest.mark.anyio
async def test_asr_and_tts_on_two_resident_models_finish_sooner_than_in_sequence(pair: _Pair) -> None:
    spare = spare_cores()
    if spare < 1.6:
        pytest.skip(f"this machine gives two processes {spare:.1f} cores right now; a speed-up needs 2")

    sequential = await _best_of(3, pair.one_after_the_other)
    parallel = await _best_of(3, pair.both)

    print(f"sequential {sequential:.2f}s, parallel {parallel:.2f}s ({parallel / sequential:.0%})")
    assert parallel < 0.85 * sequential
