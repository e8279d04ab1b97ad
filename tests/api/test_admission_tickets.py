"""Issue 24 item 4: admission reserves. A request admitted by `check_queue` holds a place (a ticket) until
it ends, so `max_queue` bounds the audio decoded for a model, and TALKIES_MAX_DECODES bounds decodes over
all requests. Spies on the decoder count the work done."""

from __future__ import annotations

import asyncio
import threading
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from talkies.api.app import create_app
from talkies.services import transcription
from tests.api.audio_helpers import write_wav
from tests.api.test_admission import multipart
from tests.fakes import FakeFactory, wait_until
from tests.server import asgi_client

pytestmark = pytest.mark.anyio


class DecodeSpy:
    """Counts decodes; with `hold` set, each decode waits for `release` (a worker thread blocks)."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch, hold: bool = False) -> None:
        self.started = 0
        self.active = 0
        self.max_active = 0
        self.release = threading.Event()
        self.lock = threading.Lock()
        real = transcription.decode_audio

        def decode(*args: Any, **kwargs: Any) -> Any:
            with self.lock:
                self.started += 1
                self.active += 1
                self.max_active = max(self.max_active, self.active)
            try:
                if hold:
                    assert self.release.wait(10)
                return real(*args, **kwargs)
            finally:
                with self.lock:
                    self.active -= 1

        monkeypatch.setattr(transcription, "decode_audio", decode)


@pytest.fixture
def body(tmp_path: Path) -> tuple[bytes, dict[str, str]]:
    tone = (0.1 * np.sin(np.arange(16_000) * 0.05)).astype(np.float32)
    wav = write_wav(tmp_path / "tone.wav", [tone]).read_bytes()
    return multipart([("model", b"asr-a", False), ("file", wav, True)])


async def test_5_eight_simultaneous_requests_with_no_queue_decode_one_file(
    make_settings: Any, fake_factory: FakeFactory, monkeypatch: pytest.MonkeyPatch, body: Any
) -> None:
    spy = DecodeSpy(monkeypatch)
    gate = threading.Event()
    fake_factory["asr-a"].gate = gate  # the admitted request holds its place until we let it finish
    app = create_app(make_settings(max_queue=0), engine_factory=fake_factory)
    content, headers = body
    async with asgi_client(app) as client:

        async def send() -> int:
            answer = await client.post("/v1/audio/transcriptions", content=content, headers=headers)
            return answer.status_code

        tasks = [asyncio.create_task(send()) for _ in range(8)]
        try:
            refused = []
            for finished in asyncio.as_completed(tasks):
                refused.append(await asyncio.wait_for(finished, 30))
                if len(refused) == 7:
                    break
            assert refused == [429] * 7
        finally:
            gate.set()
        statuses = await asyncio.wait_for(asyncio.gather(*tasks), 30)
    assert sorted(statuses) == [200] + [429] * 7
    assert spy.started == 1  # the refused seven were never decoded
    pool = app.state.pool
    assert pool._slots["asr-a"].places == 0  # every ticket came back


async def test_max_decodes_bounds_decodes_over_all_admitted_requests(
    make_settings: Any, fake_factory: FakeFactory, monkeypatch: pytest.MonkeyPatch, body: Any
) -> None:
    spy = DecodeSpy(monkeypatch, hold=True)
    app = create_app(make_settings(max_queue=10, max_decodes=1), engine_factory=fake_factory)
    admission = app.state.pool.admission
    content, headers = body
    async with asgi_client(app) as client:

        async def send() -> int:
            answer = await client.post("/v1/audio/transcriptions", content=content, headers=headers)
            return answer.status_code

        tasks = [asyncio.create_task(send()) for _ in range(4)]
        try:
            await wait_until(lambda: spy.started == 1 and admission.decode_waiting == 3, 30)
            assert spy.active == 1  # three admitted requests wait for the one decode slot
        finally:
            spy.release.set()
        statuses = await asyncio.wait_for(asyncio.gather(*tasks), 30)
    assert statuses == [200] * 4
    assert spy.max_active == 1
    assert admission.decoding == 0
    assert admission.decode_waiting == 0
