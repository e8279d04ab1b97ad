"""The server's fixed cost per request (decode, VAD, encode, HTTP) against the engine's own time.

Runs a real uvicorn on 127.0.0.1 with the two weight-free engines (pocketsphinx, espeak-ng) and wraps each
engine so the time spent inside `transcribe()` / `synthesize()` is measured on the server side of the
same request. Overhead = request wall time (client side, over HTTP) - engine time. Side by side in the
same run, the pieces of that overhead are timed directly: decode (PyAV), Silero VAD, and encode.

    PYTHONPATH=src python bench/pipeline_overhead.py [--repeats 5] [--long-repeats 3]

Clips are spoken by espeak-ng (sentences with pauses), 5 s and 60 s; 60 s is past the 30 s VAD threshold.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench._harness import SENTENCES, wav_bytes
from tests.server import serve

from talkies.api.app import create_app
from talkies.audio.decode import decode_audio
from talkies.audio.encode import encode_speech, resample
from talkies.audio.vad import VadOptions, speech_regions
from talkies.engines import create_engine
from talkies.engines.base import AudioChunk, Engine, EngineContext, SpeechRequest, TranscriptionRequest
from talkies.engines.espeak import parse_wav
from talkies.registry import ModelSpec
from talkies.settings import load_settings

RATE = 16_000


class TimedEngine:
    """Delegates to a real engine and adds up the seconds spent inside it."""

    def __init__(self, engine: Engine, log: list[float]) -> None:
        self._engine = engine
        self._log = log

    def __getattr__(self, name: str) -> Any:
        return getattr(self._engine, name)

    def load(self) -> None:
        self._engine.load()

    def unload(self) -> None:
        self._engine.unload()

    def transcribe(self, request: TranscriptionRequest) -> Any:
        start = time.perf_counter()
        try:
            return self._engine.transcribe(request)  # type: ignore[attr-defined]
        finally:
            self._log.append(time.perf_counter() - start)

    def synthesize(self, request: SpeechRequest) -> Iterator[AudioChunk]:
        chunks = self._engine.synthesize(request)  # type: ignore[attr-defined]
        while True:
            start = time.perf_counter()
            chunk = next(chunks, None)
            self._log.append(time.perf_counter() - start)
            if chunk is None:
                return
            yield chunk


def speak_clip(seconds: float) -> np.ndarray:
    pieces, total, i = [], 0.0, 0
    while total < seconds:
        wav = subprocess.run(
            ["espeak-ng", "--stdout", "-v", "en-us+klatt"],
            input=SENTENCES[i % len(SENTENCES)].encode(),
            capture_output=True,
            check=True,
        ).stdout
        pcm, rate = parse_wav(wav)
        pcm = resample(pcm, rate, RATE)
        pieces += [pcm, np.zeros(int(0.7 * RATE), dtype=np.float32)]
        total += len(pcm) / RATE + 0.7
        i += 1
    return np.concatenate(pieces)[: int(seconds * RATE)]


def med(values: list[float]) -> float:
    return statistics.median(values)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--long-repeats", type=int, default=3)
    args = parser.parse_args()

    log: list[float] = []

    def factory(spec: ModelSpec, context: EngineContext) -> Engine:
        return TimedEngine(create_engine(spec, context), log)

    tmp = Path(tempfile.mkdtemp(prefix="talkies-bench-"))
    registry = tmp / "models.json"
    registry.write_text(
        '{"models": {"pocketsphinx-en-us": {"executor": "pocketsphinx"},'
        ' "espeak-ng": {"executor": "espeak", "default_voice": "en-us"}}}'
    )
    settings = load_settings(
        models_file=registry,
        data_dir=tmp / "data",
        sweeper_interval=0,
        engine_isolation="inprocess",
        device="cpu",
    )
    clips = {"5s": speak_clip(5.0), "60s": speak_clip(60.0)}
    texts = {"5s": " ".join(SENTENCES[:2]), "60s": " ".join(SENTENCES * 7)}
    print(f"cpu cores: {len(__import__('os').sched_getaffinity(0))}; python {sys.version.split()[0]}")
    print()
    print("ASR  pocketsphinx-en-us, response_format=verbose_json (medians)")
    print(
        f"{'clip':>5} {'request s':>10} {'engine s':>9} {'overhead s':>11} {'ratio':>7} "
        f"{'decode s':>9} {'VAD s':>7}"
    )
    with (
        serve(create_app(settings, engine_factory=factory)) as url,
        httpx.Client(base_url=url, timeout=600) as client,
    ):
        client.post(
            "/v1/audio/speech", json={"model": "espeak-ng", "input": "warm up", "response_format": "wav"}
        )
        warm = wav_bytes(clips["5s"])
        client.post(
            "/v1/audio/transcriptions", data={"model": "pocketsphinx-en-us"}, files={"file": ("w.wav", warm)}
        )
        for name, pcm in clips.items():
            body = wav_bytes(pcm)
            path = tmp / f"{name}.wav"
            path.write_bytes(body)
            totals, engines, decodes, vads = [], [], [], []
            for _ in range(args.repeats if name == "5s" else args.long_repeats):
                log.clear()
                start = time.perf_counter()
                response = client.post(
                    "/v1/audio/transcriptions",
                    data={"model": "pocketsphinx-en-us", "response_format": "verbose_json"},
                    files={"file": (path.name, body, "audio/wav")},
                )
                totals.append(time.perf_counter() - start)
                response.raise_for_status()
                engines.append(sum(log))
                t = time.perf_counter()
                decoded = decode_audio(path)
                decodes.append(time.perf_counter() - t)
                if len(decoded) / RATE > settings.vad_chunk_threshold:
                    t = time.perf_counter()
                    speech_regions(decoded, VadOptions.from_settings(settings))
                    vads.append(time.perf_counter() - t)
            total, engine = med(totals), med(engines)
            vad = f"{med(vads):7.3f}" if vads else f"{'-':>7}"
            print(
                f"{name:>5} {total:10.3f} {engine:9.3f} {total - engine:11.3f} "
                f"{(total - engine) / engine:7.1%} {med(decodes):9.3f} {vad}"
            )

        print()
        print("TTS  espeak-ng (medians)")
        print(
            f"{'text':>5} {'format':>6} {'audio s':>8} {'request s':>10} {'engine s':>9} {'overhead s':>11} "
            f"{'ratio':>7} {'encode s':>9}"
        )
        for name, text in texts.items():
            for fmt in ("wav", "mp3", "opus"):
                totals, engines, encodes, seconds = [], [], [], 0.0
                for _ in range(args.repeats if name == "5s" else args.long_repeats):
                    log.clear()
                    start = time.perf_counter()
                    response = client.post(
                        "/v1/audio/speech", json={"model": "espeak-ng", "input": text, "response_format": fmt}
                    )
                    totals.append(time.perf_counter() - start)
                    response.raise_for_status()
                    engines.append(sum(log))
                    pcm_response = client.post(
                        "/v1/audio/speech",
                        json={"model": "espeak-ng", "input": text, "response_format": "pcm"},
                    )
                    pcm = np.frombuffer(pcm_response.content, dtype="<i2").astype(np.float32) / 32768
                    seconds = len(pcm) / 24000
                    t = time.perf_counter()
                    encode_speech([pcm], fmt)
                    encodes.append(time.perf_counter() - t)
                total, engine = med(totals), med(engines)
                print(
                    f"{name:>5} {fmt:>6} {seconds:8.1f} {total:10.3f} {engine:9.3f} {total - engine:11.3f} "
                    f"{(total - engine) / engine:7.1%} {med(encodes):9.3f}"
                )


if __name__ == "__main__":
    main()
