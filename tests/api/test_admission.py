"""Admission first (issue 19, item 2): a full queue answers 429 + Retry-After before the audio is decoded,
and, when the `model` field comes before the file part (as the official SDKs send it), before the upload
is stored. Spies on the decoder and on the upload reader's temporary files show the work not done."""

from __future__ import annotations

import asyncio
import tempfile
import threading
import time
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import openai
import pytest

from talkies.api import uploads
from talkies.api.app import create_app
from talkies.services import transcription
from tests.api.audio_helpers import write_wav
from tests.fakes import FakeFactory, wait_until
from tests.server import asgi_client, serve

pytestmark = pytest.mark.anyio
BOUNDARY = "admissionboundary"


class Spies:
    """Counts decoder runs and upload temp files from the moment `reset` is called."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.decodes = 0
        self.stored = 0
        real_decode = transcription.decode_audio
        real_mkstemp = tempfile.mkstemp

        def decode(*args: Any, **kwargs: Any) -> Any:
            self.decodes += 1
            return real_decode(*args, **kwargs)

        def mkstemp(*args: Any, **kwargs: Any) -> Any:
            if kwargs.get("prefix") == uploads.TEMP_PREFIX:
                self.stored += 1
            return real_mkstemp(*args, **kwargs)

        monkeypatch.setattr(transcription, "decode_audio", decode)
        monkeypatch.setattr(uploads.tempfile, "mkstemp", mkstemp)

    def reset(self) -> None:
        self.decodes = 0
        self.stored = 0


@pytest.fixture
def spies(monkeypatch: pytest.MonkeyPatch) -> Spies:
    return Spies(monkeypatch)


@pytest.fixture
def wav(tmp_path: Path) -> bytes:
    tone = (0.1 * np.sin(np.arange(16_000) * 0.05)).astype(np.float32)
    return write_wav(tmp_path / "tone.wav", [tone]).read_bytes()


def multipart(parts: list[tuple[str, bytes, bool]]) -> tuple[bytes, dict[str, str]]:
    """A body with the parts in the order given: (name, value, is_file)."""
    body = bytearray()
    for name, value, is_file in parts:
        body += f"--{BOUNDARY}\r\n".encode()
        if is_file:
            body += f'Content-Disposition: form-data; name="{name}"; filename="a.wav"\r\n'.encode()
            body += b"Content-Type: audio/wav\r\n\r\n"
        else:
            body += f'Content-Disposition: form-data; name="{name}"\r\n\r\n'.encode()
        body += value + b"\r\n"
    body += f"--{BOUNDARY}--\r\n".encode()
    return bytes(body), {"content-type": f"multipart/form-data; boundary={BOUNDARY}"}


def queued(app: Any, slug: str) -> int:
    return next(int(row["queued"]) for row in app.state.pool.ps() if row["model"] == slug)


class Busy:
    """asr-a with one request running (held by a gate) and one waiting: with max_queue=1, full."""

    def __init__(self, app: Any, fake_factory: FakeFactory, send: Callable[[], Awaitable[int]]) -> None:
        self.app = app
        self.factory = fake_factory
        self.send = send
        self.gate = threading.Event()
        fake_factory["asr-a"].gate = self.gate
        self.tasks: list[asyncio.Task[int]] = []

    async def __aenter__(self) -> Busy:
        self.tasks.append(asyncio.create_task(self.send()))
        await wait_until(lambda: self.factory["asr-a"].active == 1)
        self.tasks.append(asyncio.create_task(self.send()))
        await wait_until(lambda: queued(self.app, "asr-a") == 1)
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.gate.set()
        statuses = await asyncio.gather(*self.tasks)
        assert statuses == [200, 200]  # the requests that were admitted are served


async def test_full_queue_is_refused_before_decoding_and_before_storing(
    make_settings: Any, fake_factory: FakeFactory, spies: Spies, wav: bytes, tmp_path: Path
) -> None:
    app = create_app(make_settings(max_queue=1), engine_factory=fake_factory)
    model_first, headers = multipart([("model", b"asr-a", False), ("file", wav, True)])
    file_first, _ = multipart([("file", wav, True), ("model", b"asr-a", False)])
    # No model field: the default model (asr-a), known only once the form is read; refused before decoding.
    streamed, _ = multipart([("stream", b"true", False), ("file", wav, True)])
    async with asgi_client(app) as client:

        async def send() -> int:
            response = await client.post("/v1/audio/transcriptions", content=model_first, headers=headers)
            return response.status_code

        async with Busy(app, fake_factory, send):
            assert (spies.decodes, spies.stored) == (2, 2)  # the spies see the admitted requests' work
            spies.reset()
            refused = await client.post("/v1/audio/transcriptions", content=model_first, headers=headers)
            assert refused.status_code == 429, refused.text
            assert int(refused.headers["retry-after"]) >= 1
            assert "TALKIES_MAX_QUEUE" in refused.json()["error"]["message"]
            assert (spies.decodes, spies.stored) == (0, 0)  # model before file: nothing stored

            refused = await client.post("/v1/audio/transcriptions", content=file_first, headers=headers)
            assert refused.status_code == 429, refused.text
            assert (spies.decodes, spies.stored) == (0, 1)  # file before model: stored, never decoded

            refused = await client.post("/v1/audio/transcriptions", content=streamed, headers=headers)
            assert refused.status_code == 429, refused.text
            assert refused.headers["content-type"].startswith("application/json")  # not an event stream
            assert (spies.decodes, spies.stored) == (0, 2)

            refused = await client.post("/v1/audio/translations", content=model_first, headers=headers)
            assert refused.status_code == 429, refused.text
            assert (spies.decodes, spies.stored) == (0, 2)
            # the admitted requests' two uploads, none of the refused ones'
            assert len(list((tmp_path / "data" / "tmp").glob(f"{uploads.TEMP_PREFIX}*"))) == 2
        assert not any((tmp_path / "data" / "tmp").glob(f"{uploads.TEMP_PREFIX}*"))
        ok = await client.post("/v1/audio/transcriptions", content=file_first, headers=headers)
        assert ok.status_code == 200, ok.text  # the queue drained: admitted again


async def test_a_free_place_admits_and_other_models_are_not_refused(
    make_settings: Any, fake_factory: FakeFactory, wav: bytes
) -> None:
    app = create_app(make_settings(max_queue=1), engine_factory=fake_factory)
    body, headers = multipart([("model", b"asr-a", False), ("file", wav, True)])
    other, _ = multipart([("model", b"asr-b", False), ("file", wav, True)])
    unknown, _ = multipart([("model", b"nope", False), ("file", wav, True)])
    async with asgi_client(app) as client:

        async def send() -> int:
            return (await client.post("/v1/audio/transcriptions", content=body, headers=headers)).status_code

        async with Busy(app, fake_factory, send):
            response = await client.post("/v1/audio/transcriptions", content=other, headers=headers)
            assert response.status_code == 200, response.text  # asr-b's queue is its own
            response = await client.post("/v1/audio/transcriptions", content=unknown, headers=headers)
            assert response.status_code == 404  # a wrong name is still reported as before


@pytest.fixture
def sdk_server(make_settings: Any, fake_factory: FakeFactory) -> Iterator[tuple[Any, str]]:
    app = create_app(make_settings(max_queue=1), engine_factory=fake_factory)
    with serve(app) as base_url:
        yield app, base_url


def test_the_official_sdk_gets_429_before_its_upload_is_stored(
    sdk_server: tuple[Any, str], fake_factory: FakeFactory, spies: Spies, tmp_path: Path, wav: bytes
) -> None:
    """A real server, the `openai` SDK (fields first, then the file): RateLimitError, nothing stored. The
    refused upload is 32 MiB, more than the sockets buffer: the client still reads a clean 429 (not a
    connection reset it would retry) although the server stops reading the body at the `model` field."""
    app, base_url = sdk_server
    audio = tmp_path / "tone.wav"
    audio.write_bytes(wav)
    big = tmp_path / "big.wav"
    big.write_bytes(wav + bytes(32 * 1024 * 1024))  # a valid header, then a long tail; never decoded
    client = openai.OpenAI(base_url=f"{base_url}/v1", api_key="unused", timeout=60, max_retries=0)
    gate = threading.Event()
    fake_factory["asr-a"].gate = gate
    results: list[str] = []

    def transcribe() -> None:
        with audio.open("rb") as f:
            results.append(client.audio.transcriptions.create(model="asr-a", file=f).text)

    threads = [threading.Thread(target=transcribe) for _ in range(2)]
    try:
        threads[0].start()
        _wait(lambda: fake_factory["asr-a"].active == 1)
        threads[1].start()
        _wait(lambda: queued(app, "asr-a") == 1)
        spies.reset()
        with big.open("rb") as f, pytest.raises(openai.RateLimitError) as info:
            client.audio.transcriptions.create(model="asr-a", file=f)
        assert info.value.response.headers["retry-after"]
        assert (spies.decodes, spies.stored) == (0, 0)
    finally:
        gate.set()
        for thread in threads:
            thread.join(30)
    assert results == [" fake", " fake"]


def _wait(predicate: Callable[[], bool], limit: float = 10.0) -> None:
    deadline = time.monotonic() + limit
    while not predicate():
        assert time.monotonic() < deadline, "timed out waiting"
        time.sleep(0.01)
