"""Two real models resident together in worker processes: whisper-tiny (ASR) and Kokoro (TTS), through
the pool. Used by tests/engines/test_host_real.py (CPU overlap) and bench/two_resident_models.py (wall
clock, which is a benchmark figure, not a test assertion)."""

from __future__ import annotations

import json
from pathlib import Path

import anyio
import numpy as np

from talkies.engines import make_engine_factory
from talkies.engines.base import EngineContext, SpeechRequest, TranscriptionRequest
from talkies.pool import ModelPool
from talkies.registry import ModelSpec, load_registry
from talkies.settings import load_settings
from talkies.workers import ProcessEngine
from tests.engines.memory_probe import REQUEST_OPTIONS
from tests.fixtures.cache import install_snapshot
from tests.fixtures.kokoro import install_kokoro
from tests.fixtures.speech import speech_clip
from tests.fixtures.whisper import build_whisper

MODELS = {
    "whisper-tiny": {"executor": "whisper", "repo": "test/whisper-tiny"},
    "kokoro-82m": {"executor": "kokoro", "repo": "hexgrad/Kokoro-82M"},
}


def install(data_dir: Path, slug: str) -> Path:
    if slug == "whisper-tiny":
        return install_snapshot(build_whisper("tiny"), data_dir, slug)
    return install_kokoro(data_dir, slug)


def bounded_pool(tmp_path: Path) -> ModelPool:
    """Both models in worker processes, room for both, one CPU thread each, Whisper's decoding bounded."""
    for slug in MODELS:
        install(tmp_path / "data", slug)
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


class Pair:
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
