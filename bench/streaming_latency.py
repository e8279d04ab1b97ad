"""Streaming latency: time to the first transcript delta / first audio byte against the total time, streamed
and not, for every engine that runs here without real weights, side by side in one run.

One real `talkies serve` process (tests/live_server.py: a subprocess, a real socket) with pocketsphinx and
espeak-ng (weight-free), and, when their extras are installed and the generated test models build
(tests/fixtures/, cached under TALKIES_TEST_CACHE), Whisper (the random-weight "tiny" shape), parakeet_cpp
(the tiny TDT exported to ONNX) and Kokoro (random-weight Kokoro-82M on PyTorch). Random weights mean
real compute per window / token / phoneme, not real words.

Transcription: a ~10 s espeak-ng clip of three sentences with 1 s pauses; TALKIES_VAD_CHUNK_THRESHOLD=5 so
both the plain and the streamed request take the long-file path (VAD regions). `plain` is `json`: the
first text arrives with the whole answer. `stream` is `stream=true`: first = the first
`transcript.text.delta` event, total = the end of the stream.
Speech: a four-sentence paragraph. `wav` is the whole-body WAV (exact sizes, the default): the first
byte comes once synthesis ends. `pcm` streams bytes as sentences are synthesized; `sse` is
`stream_format=sse` (first = the first `speech.audio.delta` event).

Every measurement is the client's wall clock from sending the request. Each engine is warmed up once per
mode (model load) before the rounds; rounds alternate the order of the modes (A B, B A) and the table
shows medians over rounds.

    python bench/streaming_latency.py [--rounds 3] [--engines pocketsphinx,espeak,whisper,parakeet_cpp,kokoro]
"""

from __future__ import annotations

import argparse
import io
import statistics
import sys
import tempfile
import time
import wave
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "src"), str(ROOT)]

from tests.api.audio_helpers import RATE, VOICE, silence, speak  # noqa: E402
from tests.live_server import live_server  # noqa: E402

SENTENCES = (
    "The weather is nice today.",
    "Please call me tomorrow morning.",
    "Open the door and turn on the light.",
)
PARAGRAPH = (
    "The weather is nice today. Please call me tomorrow morning. "
    "Open the door and turn on the light. We will meet again next week at the station."
)
ASR_MODES = ("plain", "stream")
TTS_MODES = ("wav", "pcm", "sse")


def clip_wav() -> bytes:
    pieces: list[np.ndarray] = []
    for sentence in SENTENCES:
        pieces += [silence(0.5), speak(sentence), silence(0.5)]
    pcm = (np.clip(np.concatenate(pieces), -1, 1) * 32767).astype("<i2")
    out = io.BytesIO()
    with wave.open(out, "wb") as wav:
        wav.setnchannels(1)
        wav.setsampwidth(2)
        wav.setframerate(RATE)
        wav.writeframes(pcm.tobytes())
    return out.getvalue()


def prepare(names: list[str], data_dir: Path) -> tuple[dict[str, dict[str, Any]], dict[str, str], list[str]]:
    """Registry entries for the engines that can run here; (models, slug -> kind, skipped reasons)."""
    from tests.fixtures.cache import install_snapshot

    models: dict[str, dict[str, Any]] = {}
    kinds: dict[str, str] = {}
    skipped: list[str] = []

    def add(slug: str, kind: str, entry: dict[str, Any], install: Callable[[], object] | None = None) -> None:
        try:
            if install is not None:
                install()
        except Exception as exc:  # a missing extra or a failed build: report it, bench the rest
            skipped.append(
                f"{slug}: {type(exc).__name__}: {str(exc).splitlines()[0][:120] if str(exc) else ''}"
            )
            return
        models[slug] = entry
        kinds[slug] = kind

    for name in names:
        if name == "pocketsphinx":
            add("pocketsphinx-en-us", "asr", {"executor": "pocketsphinx"})
        elif name == "espeak":
            add("espeak-ng", "tts", {"executor": "espeak", "default_voice": VOICE})
        elif name == "whisper":

            def whisper() -> None:
                import faster_whisper  # noqa: F401
                from tests.fixtures.whisper import build_whisper

                install_snapshot(build_whisper("tiny"), data_dir, "whisper-tiny")

            add("whisper-tiny", "asr", {"executor": "whisper", "repo": "test/whisper-tiny"}, whisper)
        elif name == "parakeet_cpp":

            def parakeet() -> None:
                import onnx_asr  # noqa: F401
                from tests.fixtures.parakeet_onnx import build_parakeet_onnx

                install_snapshot(build_parakeet_onnx("tdt"), data_dir, "parakeet-tiny-onnx")

            add("parakeet-tiny-onnx", "asr", {"executor": "parakeet_cpp", "repo": "test/tdt"}, parakeet)
        elif name == "kokoro":

            def kokoro() -> None:
                from tests.fixtures.kokoro import install_kokoro

                install_kokoro(data_dir)

            entry = {"executor": "kokoro", "repo": "hexgrad/Kokoro-82M", "default_voice": "af_heart"}
            add("kokoro-82m", "tts", entry, kokoro)
        else:
            raise SystemExit(f"unknown engine {name!r}")
    return models, kinds, skipped


def transcribe(client: httpx.Client, slug: str, clip: bytes, mode: str) -> tuple[float, float]:
    data = {"model": slug}
    if mode == "stream":
        data["stream"] = "true"
    started = time.perf_counter()
    first = None
    with client.stream(
        "POST", "/v1/audio/transcriptions", data=data, files={"file": ("clip.wav", clip)}
    ) as response:
        if response.status_code != 200:
            response.read()
            raise RuntimeError(f"{slug} {mode}: {response.status_code} {response.text[:300]}")
        for line in response.iter_lines():
            if first is None and (mode == "plain" or '"transcript.text.delta"' in line):
                first = time.perf_counter() - started
    total = time.perf_counter() - started
    return (first if first is not None else total), total


def synthesize(client: httpx.Client, slug: str, mode: str) -> tuple[float, float]:
    body: dict[str, Any] = {
        "model": slug,
        "input": PARAGRAPH,
        "response_format": "wav" if mode == "wav" else "pcm",
    }
    if mode == "sse":
        body["stream_format"] = "sse"
    started = time.perf_counter()
    first = None
    with client.stream("POST", "/v1/audio/speech", json=body) as response:
        if response.status_code != 200:
            response.read()
            raise RuntimeError(f"{slug} {mode}: {response.status_code} {response.text[:300]}")
        if mode == "sse":
            for line in response.iter_lines():
                if first is None and '"speech.audio.delta"' in line:
                    first = time.perf_counter() - started
        else:
            for chunk in response.iter_bytes():
                if first is None and chunk:
                    first = time.perf_counter() - started
    total = time.perf_counter() - started
    return (first if first is not None else total), total


def main() -> None:
    formatter = argparse.RawDescriptionHelpFormatter
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=formatter)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--engines", default="pocketsphinx,espeak,whisper,parakeet_cpp,kokoro")
    args = parser.parse_args()
    clip = clip_wav()
    clip_seconds = (len(clip) - 44) / 2 / RATE
    with tempfile.TemporaryDirectory(prefix="talkies-bench-") as tmp:
        tmp_path = Path(tmp)
        models, kinds, skipped = prepare(args.engines.split(","), tmp_path / "live-data")
        env = {"TALKIES_VAD_CHUNK_THRESHOLD": "5", "TALKIES_SWEEPER_INTERVAL": "0", "TALKIES_DEVICE": "cpu"}
        times: dict[tuple[str, str], list[tuple[float, float]]] = {}
        with (
            live_server(tmp_path, models, **env) as server,
            httpx.Client(base_url=server.url, timeout=900) as client,
        ):

            def once(slug: str, mode: str) -> tuple[float, float]:
                if kinds[slug] == "asr":
                    return transcribe(client, slug, clip, mode)
                return synthesize(client, slug, mode)

            for slug, kind in kinds.items():
                modes = ASR_MODES if kind == "asr" else TTS_MODES
                for mode in modes:
                    once(slug, mode)  # warm-up: the model loads
                for index in range(args.rounds):
                    for mode in modes if index % 2 == 0 else tuple(reversed(modes)):
                        times.setdefault((slug, mode), []).append(once(slug, mode))
                print(f"  {slug}: done", file=sys.stderr, flush=True)
    print(
        f"clip {clip_seconds:.1f} s (transcription), paragraph of {len(PARAGRAPH)} characters (speech); "
        f"medians of {args.rounds} rounds\n"
    )
    print("| engine | mode | first s | total s | first / total |")
    print("|---|---|---|---|---|")
    for (slug, mode), values in times.items():
        first = statistics.median(v[0] for v in values)
        total = statistics.median(v[1] for v in values)
        print(f"| {slug} | {mode} | {first:.3f} | {total:.3f} | {first / total:.0%} |")
    for reason in skipped:
        print(f"\nskipped {reason}")


if __name__ == "__main__":
    main()
