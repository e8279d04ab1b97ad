"""Wyoming against HTTP for the same work, side by side in one run, and time to first audio over Wyoming.

One real talkies (uvicorn on 127.0.0.1 with the weight-free engines, the Wyoming listener in its lifespan).
Each round runs the same transcription (a 5 s espeak-ng clip, pocketsphinx) and the same synthesis
(one sentence, espeak-ng, 16-bit PCM) once over each protocol, in ABBA order; medians of the wall times
give the Wyoming / HTTP ratio. Then a five-sentence synthesis over Wyoming: time to the first audio-chunk
against the time to audio-stop, with the same over HTTP streaming (first body byte vs last).

    PYTHONPATH=src python bench/wyoming_overhead.py [--rounds 8]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import time
from pathlib import Path

import httpx
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench._harness import SENTENCES, wav_bytes
from tests.api.audio_helpers import RATE, VOICE, silence, speak, weightfree_registry
from tests.server import serve

from talkies.api.app import create_app
from talkies.settings import load_settings


def _clip() -> bytes:
    """About 5 s of speech as 16 kHz 16-bit mono PCM."""
    pcm = np.concatenate([speak(SENTENCES[0]), silence(0.4), speak(SENTENCES[1])])
    return (np.clip(pcm, -1, 1) * 32767).astype("<i2").tobytes()


async def wyoming_transcribe(port: int, data: bytes) -> str:
    from wyoming.asr import Transcribe
    from wyoming.audio import AudioChunk, AudioStart, AudioStop
    from wyoming.client import AsyncTcpClient

    async with AsyncTcpClient("127.0.0.1", port) as client:
        await client.write_event(Transcribe(language="en").event())
        await client.write_event(AudioStart(rate=RATE, width=2, channels=1).event())
        for offset in range(0, len(data), 2048):
            chunk = AudioChunk(rate=RATE, width=2, channels=1, audio=data[offset : offset + 2048])
            await client.write_event(chunk.event())
        await client.write_event(AudioStop().event())
        while True:
            event = await client.read_event()
            assert event is not None
            if event.type == "transcript":
                return str(event.data["text"])
            assert event.type != "error", event.data


async def wyoming_speak(port: int, text: str) -> tuple[float, float, int]:
    """(seconds to first audio-chunk, seconds to audio-stop, PCM bytes)."""
    from wyoming.client import AsyncTcpClient
    from wyoming.tts import Synthesize, SynthesizeVoice

    started = time.perf_counter()
    first = 0.0
    size = 0
    async with AsyncTcpClient("127.0.0.1", port) as client:
        await client.write_event(
            Synthesize(text=text, voice=SynthesizeVoice(name=f"espeak-ng/{VOICE}")).event()
        )
        while True:
            event = await client.read_event()
            assert event is not None
            assert event.type != "error", event.data
            if event.type == "audio-chunk":
                first = first or time.perf_counter() - started
                size += len(event.payload or b"")
            if event.type == "audio-stop":
                return first, time.perf_counter() - started, size


async def http_transcribe(client: httpx.AsyncClient, wav: bytes) -> str:
    response = await client.post(
        "/v1/audio/transcriptions",
        data={"model": "pocketsphinx-en-us"},
        files={"file": ("a.wav", wav, "audio/wav")},
    )
    response.raise_for_status()
    return str(response.json()["text"])


async def http_speak(client: httpx.AsyncClient, text: str) -> tuple[float, float, int]:
    started = time.perf_counter()
    first = 0.0
    size = 0
    body = {"model": "espeak-ng", "voice": VOICE, "input": text, "response_format": "pcm"}
    async with client.stream("POST", "/v1/audio/speech", json=body) as response:
        response.raise_for_status()
        async for part in response.aiter_bytes():
            first = first or time.perf_counter() - started
            size += len(part)
    return first, time.perf_counter() - started, size


async def timed(coro: object) -> float:
    started = time.perf_counter()
    await coro  # type: ignore[misc]
    return time.perf_counter() - started


async def run(base: str, port: int, rounds: int) -> None:
    data = _clip()
    wav = wav_bytes(data, RATE)
    sentence = SENTENCES[2]
    paragraph = " ".join(SENTENCES)
    times: dict[str, list[float]] = {k: [] for k in ("asr-http", "asr-wy", "tts-http", "tts-wy")}
    first: dict[str, list[float]] = {"http": [], "wy": []}
    total: dict[str, list[float]] = {"http": [], "wy": []}
    async with httpx.AsyncClient(base_url=base, timeout=300) as client:
        http_text = await http_transcribe(client, wav)  # warm-up, and the same words both ways
        assert http_text.strip() == await wyoming_transcribe(port, data)
        await http_speak(client, sentence)
        for index in range(rounds):
            order = ("http", "wy") if index % 2 == 0 else ("wy", "http")  # ABBA
            for side in order:
                if side == "http":
                    times["asr-http"].append(await timed(http_transcribe(client, wav)))
                    times["tts-http"].append(await timed(http_speak(client, sentence)))
                    f, t, _ = await http_speak(client, paragraph)
                else:
                    times["asr-wy"].append(await timed(wyoming_transcribe(port, data)))
                    times["tts-wy"].append(await timed(wyoming_speak(port, sentence)))
                    f, t, _ = await wyoming_speak(port, paragraph)
                first[side].append(f)
                total[side].append(t)
    med = {k: statistics.median(v) * 1000 for k, v in times.items()}
    print(f"rounds: {rounds} (ABBA), medians in ms")
    print(
        f"transcription 5 s clip: HTTP {med['asr-http']:.1f}  Wyoming {med['asr-wy']:.1f}  "
        f"ratio {med['asr-wy'] / med['asr-http']:.3f}"
    )
    print(
        f"synthesis one sentence: HTTP {med['tts-http']:.1f}  Wyoming {med['tts-wy']:.1f}  "
        f"ratio {med['tts-wy'] / med['tts-http']:.3f}"
    )
    for side, name in (("wy", "Wyoming"), ("http", "HTTP stream")):
        f, t = statistics.median(first[side]) * 1000, statistics.median(total[side]) * 1000
        print(f"five sentences, {name}: first audio {f:.1f}  last {t:.1f}  ({f / t:.0%} of the total)")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rounds", type=int, default=8)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        settings = load_settings(
            models_file=weightfree_registry(Path(tmp) / "models.json"),
            data_dir=Path(tmp) / "data",
            sweeper_interval=0,
            device="cpu",
            log_level="warning",
            wyoming_uri="tcp://127.0.0.1:0",
        )
        app = create_app(settings)
        with serve(app) as base:
            asyncio.run(run(base, app.state.wyoming.port, args.rounds))


if __name__ == "__main__":
    main()
