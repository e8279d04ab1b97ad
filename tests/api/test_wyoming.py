"""The Wyoming server against a real talkies (uvicorn on a socket, the Wyoming listener in its lifespan),
driven by the `wyoming` package's own async TCP client, in Home Assistant's exact sequences."""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest

from talkies.api.app import create_app
from talkies.audio.encode import resample
from talkies.settings import Settings, load_settings
from tests.api.audio_helpers import (
    RATE,
    SENTENCE_A,
    SENTENCE_B,
    VOICE,
    speak,
    weightfree_registry,
    word_overlap,
)
from tests.conftest import write_registry
from tests.fakes import FakeFactory
from tests.server import serve

wyoming = pytest.importorskip("wyoming")

from wyoming.asr import Transcribe  # noqa: E402
from wyoming.audio import AudioChunk, AudioStart, AudioStop  # noqa: E402
from wyoming.client import AsyncTcpClient  # noqa: E402
from wyoming.info import Describe, Info  # noqa: E402
from wyoming.tts import (  # noqa: E402
    Synthesize,
    SynthesizeChunk,
    SynthesizeStart,
    SynthesizeStop,
    SynthesizeVoice,
)

from tests.wyoming_helpers import read_event, read_until, wyoming_client  # noqa: E402

pytestmark = pytest.mark.anyio
TIMEOUT = 120.0


def _settings(tmp_path: Path, **overrides: Any) -> Settings:
    if "models_file" not in overrides:
        overrides["models_file"] = weightfree_registry(tmp_path / "models.json")
    return load_settings(
        data_dir=tmp_path / "data",
        sweeper_interval=0,
        device="cpu",
        wyoming_uri="tcp://127.0.0.1:0",
        **overrides,
    )


@contextmanager
def _talkies(settings: Settings, **app_kwargs: Any) -> Iterator[tuple[str, int]]:
    """(HTTP base URL, Wyoming port) of a real server."""
    app = create_app(settings, **app_kwargs)
    with serve(app) as base:
        yield base, app.state.wyoming.port


def _int16(pcm: np.ndarray) -> bytes:
    return (np.clip(pcm, -1, 1) * 32767).astype("<i2").tobytes()


async def _send_audio(
    client: AsyncTcpClient, data: bytes, *, rate: int, width: int, channels: int, language: str | None = "en"
) -> None:
    """Home Assistant's order: transcribe, audio-start, 1024-sample chunks, audio-stop."""
    await client.write_event(Transcribe(language=language).event())
    await client.write_event(AudioStart(rate=rate, width=width, channels=channels).event())
    step = 1024 * width * channels
    for offset in range(0, len(data), step):
        chunk = AudioChunk(rate=rate, width=width, channels=channels, audio=data[offset : offset + step])
        await client.write_event(chunk.event())
    await client.write_event(AudioStop().event())


@pytest.fixture(scope="module")
def sentence() -> np.ndarray:
    return speak(SENTENCE_A)


async def test_describe_lists_asr_models_and_every_tts_voice(tmp_path: Path) -> None:
    with _talkies(_settings(tmp_path)) as (_, port):
        async with wyoming_client(port) as client:
            await client.write_event(Describe().event())
            info = Info.from_event(await read_event(client))
    (asr,) = info.asr
    assert [m.name for m in asr.models] == ["pocketsphinx-en-us"]
    assert asr.models[0].installed
    assert asr.models[0].languages == ["en"]
    assert asr.supports_transcript_streaming
    (tts,) = info.tts
    names = {v.name for v in tts.voices}
    assert "espeak-ng/en-us" in names
    assert "espeak-ng/de" in names
    assert all(v.installed for v in tts.voices)
    german = next(v for v in tts.voices if v.name == "espeak-ng/de")
    assert german.languages == ["de"]
    assert tts.supports_synthesize_streaming


async def test_describe_is_rebuilt_on_each_call(tmp_path: Path) -> None:
    """A model's snapshot that appears while the server runs shows as installed on the next describe."""
    registry = write_registry(
        tmp_path / "models.json",
        {
            "pocketsphinx-en-us": {"executor": "pocketsphinx"},
            "whisper-x": {"executor": "whisper", "repo": "a/b"},
        },
    )
    settings = _settings(tmp_path, models_file=registry)
    with _talkies(settings) as (_, port):
        async with wyoming_client(port) as client:
            await client.write_event(Describe().event())
            before = {m.name: m.installed for m in Info.from_event(await read_event(client)).asr[0].models}
            snapshot = settings.models_dir / "whisper-x"
            snapshot.mkdir(parents=True)
            for name in ("config.json", "model.bin", "tokenizer.json", "vocabulary.txt"):  # whisper needs all
                (snapshot / name).write_bytes(b"x")
            await client.write_event(Describe().event())
            after = {m.name: m.installed for m in Info.from_event(await read_event(client)).asr[0].models}
    assert before == {"pocketsphinx-en-us": True, "whisper-x": False}
    assert after["whisper-x"] is (before["pocketsphinx-en-us"] and _whisper_importable())


def _whisper_importable() -> bool:
    import importlib.util

    return importlib.util.find_spec("faster_whisper") is not None


async def test_transcribes_home_assistant_sequence_with_streamed_transcript(
    tmp_path: Path, sentence: np.ndarray
) -> None:
    with _talkies(_settings(tmp_path)) as (base, port):
        async with wyoming_client(port) as client:
            await _send_audio(client, _int16(sentence), rate=RATE, width=2, channels=1)
            events = await read_until(client, "transcript-stop")
        async with httpx.AsyncClient(base_url=base, timeout=TIMEOUT) as http_client:
            response = await http_client.post(
                "/v1/audio/transcriptions",
                data={"model": "pocketsphinx-en-us"},
                files={"file": ("a.wav", _wav(sentence), "audio/wav")},
            )
        http = response.json()["text"]
    kinds = [e.type for e in events]
    assert kinds[0] == "transcript-start"
    assert kinds[-2:] == ["transcript", "transcript-stop"]
    assert set(kinds[1:-2]) <= {"transcript-chunk"}
    assert len(kinds) >= 4  # at least one chunk
    transcript = events[-2].data
    assert word_overlap(SENTENCE_A, transcript["text"]) >= 0.6
    assert transcript["text"] == http.strip()  # the same engine path as HTTP
    chunks = "".join(e.data["text"] for e in events if e.type == "transcript-chunk")
    assert chunks.split() == transcript["text"].split()


async def test_other_rate_width_and_channels_are_converted(tmp_path: Path, sentence: np.ndarray) -> None:
    """44.1 kHz, 32-bit, stereo (speech on both channels) transcribes like 16 kHz 16-bit mono."""
    hi = resample(sentence, RATE, 44_100)
    stereo = np.stack([hi, hi], axis=1).reshape(-1)
    data = (np.clip(stereo, -1, 1) * 2147483647).astype("<i4").tobytes()
    with _talkies(_settings(tmp_path)) as (_, port):
        async with wyoming_client(port) as client:
            await _send_audio(client, data, rate=44_100, width=4, channels=2)
            events = await read_until(client, "transcript-stop")
    transcript = next(e for e in events if e.type == "transcript")
    assert word_overlap(SENTENCE_A, transcript.data["text"]) >= 0.6


async def test_no_audio_is_an_empty_transcript(tmp_path: Path) -> None:
    with _talkies(_settings(tmp_path)) as (_, port):
        async with wyoming_client(port) as client:
            await client.write_event(Transcribe(language="en").event())
            await client.write_event(AudioStart(rate=RATE, width=2, channels=1).event())
            await client.write_event(AudioStop().event())
            event = await read_event(client)
    assert event.type == "transcript"
    assert event.data["text"] == ""


async def test_synthesize_one_start_one_stop_same_audio_as_http(tmp_path: Path) -> None:
    text = f"{SENTENCE_A} {SENTENCE_B}"
    with _talkies(_settings(tmp_path)) as (base, port):
        async with wyoming_client(port) as client:
            voice = SynthesizeVoice(name=f"espeak-ng/{VOICE}")
            await client.write_event(Synthesize(text=text, voice=voice).event())
            events = await read_until(client, "audio-stop")  # Home Assistant stops at the first stop
            await client.write_event(Describe().event())
            assert (await read_event(client)).type == "info"  # nothing else was queued behind audio-stop
        async with httpx.AsyncClient(base_url=base, timeout=TIMEOUT) as http_client:
            response = await http_client.post(
                "/v1/audio/speech",
                json={"model": "espeak-ng", "voice": VOICE, "input": text, "response_format": "pcm"},
            )
        http = response.content
    kinds = [e.type for e in events]
    assert kinds[0] == "audio-start"
    assert kinds[-1] == "audio-stop"
    assert kinds.count("audio-start") == 1
    assert set(kinds[1:-1]) == {"audio-chunk"}
    assert len(kinds) > 3  # streamed in several chunks
    chunks = [AudioChunk.from_event(e) for e in events if e.type == "audio-chunk"]
    assert {(c.rate, c.width, c.channels) for c in chunks} == {(24_000, 2, 1)}
    audio = b"".join(c.audio for c in chunks)
    assert audio == http
    assert len(audio) / 2 / 24_000 > 2.0  # two sentences of speech


async def test_voice_by_language_and_default(tmp_path: Path) -> None:
    with _talkies(_settings(tmp_path)) as (_, port):
        async with wyoming_client(port) as client:
            await client.write_event(
                Synthesize(text="Guten Tag.", voice=SynthesizeVoice(language="de")).event()
            )
            german = await read_until(client, "audio-stop")
            await client.write_event(Synthesize(text="Hello.").event())
            default = await read_until(client, "audio-stop")
    assert german[-1].type == "audio-stop"
    assert default[-1].type == "audio-stop"


async def test_streaming_synthesis_per_sentence_then_stopped(tmp_path: Path) -> None:
    with _talkies(_settings(tmp_path)) as (_, port):
        async with wyoming_client(port) as client:
            voice = SynthesizeVoice(name=f"espeak-ng/{VOICE}")
            await client.write_event(SynthesizeStart(voice=voice).event())
            for piece in ("Hello there. How are", " you today? Fi", "ne"):
                await client.write_event(SynthesizeChunk(text=piece).event())
            await client.write_event(
                Synthesize(text="Hello there. How are you today? Fine", voice=voice).event()
            )
            await client.write_event(SynthesizeStop().event())
            events = await read_until(client, "synthesize-stopped")
    kinds = [e.type for e in events if e.type != "audio-chunk"]
    assert kinds == ["audio-start", "audio-stop"] * 3 + ["synthesize-stopped"]


async def test_errors_are_events_and_the_connection_stays_usable(tmp_path: Path) -> None:
    with _talkies(_settings(tmp_path)) as (_, port):
        async with wyoming_client(port) as client:
            await client.write_event(
                Synthesize(text="hi", voice=SynthesizeVoice(name="espeak-ng/xx-nope")).event()
            )
            unknown_voice = await read_event(client)
            await client.write_event(Synthesize(text="hi", voice=SynthesizeVoice(name="nobody")).event())
            unknown_name = await read_event(client)
            await client.write_event(Transcribe(name="espeak-ng").event())
            await client.write_event(AudioStart(rate=RATE, width=2, channels=1).event())
            await client.write_event(AudioChunk(rate=RATE, width=2, channels=1, audio=b"\0" * 3200).event())
            await client.write_event(AudioStop().event())
            wrong_modality = await read_event(client)
            await client.write_event(Describe().event())
            still_open = await read_event(client)
    assert unknown_voice.type == "error"
    assert unknown_voice.data["code"] == "unknown_voice"
    assert "xx-nope" in unknown_voice.data["text"]
    assert unknown_name.type == "error"
    assert "<model>/<voice>" in unknown_name.data["text"]
    assert wrong_modality.type == "error"
    assert wrong_modality.data["code"] == "wrong_modality"
    assert still_open.type == "info"


async def test_oversized_or_malformed_frames_are_refused(tmp_path: Path) -> None:
    with _talkies(_settings(tmp_path)) as (_, port):
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        header = {
            "type": "audio-chunk",
            "data": {"rate": RATE, "width": 2, "channels": 1},
            "payload_length": 1 << 30,
        }
        writer.write(json.dumps(header).encode() + b"\n")
        await writer.drain()
        answer = json.loads(await asyncio.wait_for(reader.readline(), TIMEOUT))
        rest = await asyncio.wait_for(reader.read(), TIMEOUT)  # the server closes after a bad frame
        writer.close()

        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"not json\n")
        await writer.drain()
        garbage = json.loads(await asyncio.wait_for(reader.readline(), TIMEOUT))
        writer.close()
    assert answer["type"] == "error"
    data = answer.get("data") or json.loads(rest[: answer["data_length"]])
    assert "payload_length" in data["text"]
    assert data["code"] == "protocol"
    assert garbage["type"] == "error"


async def test_full_queue_is_an_error_event(tmp_path: Path, fake_factory: FakeFactory) -> None:
    registry = write_registry(
        tmp_path / "models.json",
        {"pocketsphinx-en-us": {"executor": "pocketsphinx", "max_concurrency": 1, "max_queue": 0}},
    )
    gate = threading.Event()
    fake_factory["pocketsphinx-en-us"].gate = gate
    silence = b"\0" * 6400
    with _talkies(_settings(tmp_path, models_file=registry), engine_factory=fake_factory) as (base, port):
        async with wyoming_client(port) as first, wyoming_client(port) as second:
            await _send_audio(first, silence, rate=RATE, width=2, channels=1)
            async with httpx.AsyncClient(base_url=base, timeout=TIMEOUT) as http_client:
                for _ in range(400):  # until the first request runs in the engine
                    if (await http_client.get("/api/ps")).json()["models"][0]["in_flight"] == 1:
                        break
                    await asyncio.sleep(0.05)
            await _send_audio(second, silence, rate=RATE, width=2, channels=1)
            refused = await read_event(second)
            gate.set()
            done = await read_until(first, "transcript-stop")
    assert refused.type == "error"
    assert refused.data["code"] == "queue_full"
    assert done[-2].type == "transcript"


async def test_concurrent_clients(tmp_path: Path, sentence: np.ndarray) -> None:
    with _talkies(_settings(tmp_path)) as (_, port):

        async def listen() -> str:
            async with wyoming_client(port) as client:
                await _send_audio(client, _int16(sentence), rate=RATE, width=2, channels=1)
                events = await read_until(client, "transcript-stop")
                return str(next(e for e in events if e.type == "transcript").data["text"])

        async def talk() -> int:
            async with wyoming_client(port) as client:
                await client.write_event(Synthesize(text=SENTENCE_B).event())
                events = await read_until(client, "audio-stop")
                return sum(len(e.payload or b"") for e in events if e.type == "audio-chunk")

        results = await asyncio.gather(listen(), talk(), listen(), talk())
    assert all(word_overlap(SENTENCE_A, text) >= 0.6 for text in results[0::2])
    assert all(size > 24_000 for size in results[1::2])


def test_bad_uri_fails_at_start(tmp_path: Path) -> None:
    from talkies.errors import ConfigError

    with pytest.raises(ConfigError, match="TALKIES_WYOMING_URI"):
        load_settings(data_dir=tmp_path, wyoming_uri="http://x:1")


def _wav(pcm: np.ndarray) -> bytes:
    import io
    import wave

    out = io.BytesIO()
    with wave.open(out, "wb") as wav:
        wav.setnchannels(1)
        wav.setsampwidth(2)
        wav.setframerate(RATE)
        wav.writeframes(_int16(pcm))
    return out.getvalue()
