"""Realtime-session test helpers: espeak-ng speech as 24 kHz PCM16 (or G.711) 50 ms chunks, a raw websocket
client that records every event, and the per-turn event-order check."""

from __future__ import annotations

import asyncio
import base64
import json
import subprocess
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from talkies.audio.encode import resample, to_int16
from talkies.audio.g711 import pcm16_to_alaw, pcm16_to_ulaw
from talkies.engines.espeak import parse_wav
from tests.api.audio_helpers import SENTENCE_A, SENTENCE_B, VOICE, word_overlap

SENTENCES = (SENTENCE_A, SENTENCE_B)
STREAM_RATE = 24_000  # what OpenAI's audio/pcm (pcm16) carries
MODEL = "pocketsphinx-en-us"
POCKETSPHINX = {"executor": "pocketsphinx", "default_source_lang": "en", "languages": ["en"]}
TRANSCRIPTION = "conversation.item.input_audio_transcription"
STARTED, STOPPED = "input_audio_buffer.speech_started", "input_audio_buffer.speech_stopped"
COMMITTED = "input_audio_buffer.committed"
DELTA, COMPLETED = f"{TRANSCRIPTION}.delta", f"{TRANSCRIPTION}.completed"
WAIT_S = 600  # a ceiling for a machine shared by many test suites, never a latency claim


def speak_at(text: str, rate: int = STREAM_RATE) -> np.ndarray:
    """`text` spoken by espeak-ng (en-us+klatt), resampled once from its own rate to `rate`."""
    wav = subprocess.run(
        ["espeak-ng", "--stdout", "-v", VOICE], input=text.encode(), capture_output=True, check=True
    ).stdout
    pcm, native = parse_wav(wav)
    return resample(pcm, native, rate)


def spoken(sentences: tuple[str, ...] = SENTENCES, gap: float = 1.0) -> np.ndarray:
    """24 kHz float32: silence, then each sentence followed by `gap` seconds of silence."""
    quiet = lambda seconds: np.zeros(int(seconds * STREAM_RATE), dtype=np.float32)  # noqa: E731
    parts = [quiet(0.4)]
    for sentence in sentences:
        parts += [speak_at(sentence), quiet(gap)]
    return np.concatenate(parts)


def encode(audio: np.ndarray, encoding: str = "pcm16") -> tuple[bytes, int]:
    """24 kHz float32 -> (bytes in `encoding`, bytes per 50 ms)."""
    if encoding == "pcm16":
        return to_int16(audio).astype("<i2").tobytes(), 2400
    narrow = to_int16(resample(audio, STREAM_RATE, 8_000))
    return (pcm16_to_ulaw(narrow) if encoding == "pcmu" else pcm16_to_alaw(narrow)), 400


def chunks(data: bytes, size: int) -> Iterator[str]:
    for at in range(0, len(data), size):
        yield base64.b64encode(data[at : at + size]).decode()


def ws_url(http_url: str, query: str = f"intent=transcription&model={MODEL}") -> str:
    return http_url.replace("http://", "ws://", 1) + "/v1/realtime?" + query


class Recorder:
    """A raw client: every server event, in arrival order, and waits on them."""

    def __init__(self, ws: ClientConnection) -> None:
        self.ws = ws
        self.events: list[dict[str, Any]] = []
        self._changed = asyncio.Event()
        self._reader = asyncio.create_task(self._read())

    async def _read(self) -> None:
        try:
            async for message in self.ws:
                self.events.append(json.loads(message))
                self._changed.set()
        except ConnectionClosed:
            pass  # the close code is on self.ws
        finally:
            self._changed.set()

    @property
    def closed(self) -> bool:
        return self._reader.done()

    async def send(self, event: dict[str, Any]) -> None:
        await self.ws.send(json.dumps(event))

    async def append(self, data: bytes, size: int) -> None:
        for piece in chunks(data, size):
            await self.send({"type": "input_audio_buffer.append", "audio": piece})

    async def wait_for(self, match: Callable[[dict[str, Any]], bool], count: int = 1) -> list[dict[str, Any]]:
        async with asyncio.timeout(WAIT_S):
            while True:
                found = [e for e in self.events if match(e)]
                if len(found) >= count:
                    return found
                if self.closed:
                    raise AssertionError(f"socket closed before the event came; events: {self.types()}")
                self._changed.clear()
                await self._changed.wait()

    async def next_of(self, kind: str, after: int = 0) -> dict[str, Any]:
        """The first `kind` event at index `after` or later."""
        found = await self.wait_for(lambda e: e["type"] == kind and self.events.index(e) >= after)
        return found[0]

    async def until_closed(self) -> None:
        async with asyncio.timeout(WAIT_S):
            await asyncio.shield(self._reader)

    def types(self) -> list[str]:
        return [e["type"] for e in self.events]


async def open_raw(url: str, **kwargs: Any) -> Recorder:
    ws = await connect(url, proxy=None, max_size=2**22, **kwargs)
    return Recorder(ws)


def check_turns(
    events: list[dict[str, Any]], sentences: tuple[str, ...], *, vad: bool = True, min_overlap: float = 0.8
) -> list[str]:
    """Each sentence one item: speech_started -> speech_stopped -> committed -> delta(s) -> completed (the
    VAD events only with server VAD; interim deltas may come before `committed`), the right words, and
    `usage` in seconds. Returns the transcripts."""
    completed = [e for e in events if e["type"] == COMPLETED]
    assert len(completed) == len(sentences), [e["type"] for e in events]
    transcripts = []
    previous = None
    for done, sentence in zip(completed, sentences, strict=True):
        item = done["item_id"]
        mine = [e for e in events if e.get("item_id") == item and e["type"] != "error"]
        kinds = [e["type"] for e in mine]
        skeleton = [k for k in kinds if k != DELTA]
        expected = [STARTED, STOPPED, COMMITTED, COMPLETED] if vad else [COMMITTED, COMPLETED]
        assert skeleton == expected, kinds
        deltas = [i for i, k in enumerate(kinds) if k == DELTA]
        assert deltas, f"no delta for {sentence!r}: {kinds}"
        if vad:
            assert kinds.index(STARTED) < deltas[0]
        assert deltas[-1] < kinds.index(COMPLETED)
        committed = mine[kinds.index(COMMITTED)]
        assert committed["previous_item_id"] == previous
        previous = item
        text = done["transcript"]
        assert word_overlap(sentence, text) >= min_overlap, (sentence, text)
        joined = "".join(e["delta"] for e in mine if e["type"] == DELTA)
        assert text.startswith(joined.strip()), (joined, text)
        assert done["usage"]["type"] == "duration"
        assert 0.5 < done["usage"]["seconds"] < 10
        transcripts.append(text)
    return transcripts
