"""Real weight-free engines under the pool's default residency: transcription and speech alternating keep
both models resident (the default TALKIES_MAX_LOADED_MODELS and memory budget no longer force a swap)."""

from __future__ import annotations

import json
from pathlib import Path

import anyio
import numpy as np
import pytest

from talkies.engines import make_engine_factory
from talkies.engines.base import SpeechRequest, TranscriptionRequest
from talkies.pool import ModelPool, PoolEvents
from talkies.registry import load_registry
from talkies.settings import load_settings

pytestmark = [pytest.mark.slow, pytest.mark.anyio]

MODELS = {"pocketsphinx-en-us": {"executor": "pocketsphinx"}, "espeak-ng": {"executor": "espeak"}}


class Counted(PoolEvents):
    def __init__(self) -> None:
        self.loads: list[str] = []
        self.evictions: list[str] = []

    def loaded(self, slug: str, seconds: float) -> None:
        self.loads.append(slug)

    def evicted(self, slug: str) -> None:
        self.evictions.append(slug)


async def test_asr_and_tts_alternate_fifty_times_without_a_reload(tmp_path: Path) -> None:
    registry_file = tmp_path / "models.json"
    registry_file.write_text(json.dumps({"models": MODELS}))
    settings = load_settings(models_file=registry_file, data_dir=tmp_path / "data", cpu_threads=1)
    pool = ModelPool(load_registry(registry_file), settings, engine_factory=make_engine_factory(settings))
    events = pool.events = Counted()
    audio = np.zeros(1600, dtype=np.float32)  # real calls, kept short: what is counted is loads
    try:
        for _ in range(50):
            async with pool.acquire("pocketsphinx-en-us") as asr:
                await anyio.to_thread.run_sync(asr.transcribe, TranscriptionRequest(audio=audio))
            async with pool.acquire("espeak-ng") as tts:
                request = SpeechRequest(text="Hi.", voice="en-us")
                await anyio.to_thread.run_sync(lambda: list(tts.synthesize(request)))  # noqa: B023
        assert sorted(events.loads) == ["espeak-ng", "pocketsphinx-en-us"], events.loads
        assert events.evictions == []
        rows = {row["model"]: row for row in pool.ps()}
        assert set(rows) == set(MODELS)
        assert all(row["memory"] == "measured" and row["memory_bytes"] > 0 for row in rows.values()), rows
    finally:
        await pool.close()
