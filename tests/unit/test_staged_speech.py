"""speak_to_file: streamed to a .part file, nothing left and the synthesis stream closed on failure."""

from __future__ import annotations

import io
import wave
from collections.abc import AsyncGenerator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

import pytest

from talkies.errors import InvalidPathError
from talkies.services.files import FileStore
from talkies.services.speech import SpeechOptions, SpeechService
from talkies.services.staged_speech import speak_to_file

pytestmark = pytest.mark.anyio


def _wav(seconds: float, rate: int = 24_000) -> bytes:
    out = io.BytesIO()
    with wave.open(out, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(b"\x00\x00" * int(seconds * rate))
    return out.getvalue()


@dataclass
class _Plan:
    format: str
    content_type: str


@dataclass
class FakeSpeech:
    """Stands in for SpeechService's validate/stream (API-shape test; real synthesis is in the MCP tests)."""

    body: bytes
    fmt: str = "wav"
    closed: list[bool] = field(default_factory=list)

    def validate(self, options: SpeechOptions) -> _Plan:
        return _Plan(self.fmt, "audio/wav")

    async def stream(self, plan: _Plan, *, whole_body: bool = False) -> AsyncGenerator[bytes, None]:
        self.whole_body = whole_body
        try:
            for start in range(0, len(self.body), 1000):
                yield self.body[start : start + 1000]
        finally:
            self.closed.append(True)


@pytest.fixture
def store(tmp_path: Path) -> FileStore:
    return FileStore(tmp_path / "files", max_upload_bytes=10)


def _speak(speech: FakeSpeech, store: FileStore, path: str | None = None) -> Any:
    options = SpeechOptions(model="m", input="hello")
    return speak_to_file(cast(SpeechService, speech), store, options, path)


async def test_staged_with_duration(store: FileStore) -> None:
    speech = FakeSpeech(_wav(1.5))
    staged = await _speak(speech, store)
    assert staged.path.startswith("speech/")
    assert staged.path.endswith(".wav")
    assert abs(staged.duration - 1.5) < 0.01
    assert staged.size == len(speech.body)  # the upload cap does not apply to audio the server made
    assert (store.root / staged.path).read_bytes() == speech.body
    assert speech.whole_body is True  # a staged file is muxed complete (seekable headers)
    pcm = await _speak(FakeSpeech(b"\x00" * 48_000, fmt="pcm"), store, "raw/a.pcm")
    assert pcm.duration == pytest.approx(1.0)


async def test_failure_mid_stream_leaves_nothing_and_closes_the_stream(
    store: FileStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    speech = FakeSpeech(_wav(1.0))
    real_begin = store.begin_write

    def failing_begin(path: str) -> Any:
        writer = real_begin(path)
        calls = []

        def write(data: bytes | bytearray) -> None:
            calls.append(1)
            if len(calls) == 3:
                raise OSError(28, "No space left on device")
            type(writer).write(writer, data)

        writer.write = write
        return writer

    monkeypatch.setattr(store, "begin_write", failing_begin)
    with pytest.raises(OSError, match="No space"):
        await _speak(speech, store, "out/a.wav")
    assert speech.closed == [True]
    assert list(store.root.rglob("*")) == []


async def test_bad_path_refused_before_synthesis(store: FileStore) -> None:
    speech = FakeSpeech(_wav(0.5))
    with pytest.raises(InvalidPathError):
        await _speak(speech, store, "../escape.wav")
    assert speech.closed == []
