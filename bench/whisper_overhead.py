"""Whisper through talkies vs faster-whisper called directly, and long files sequential vs batched.

    python bench/whisper_overhead.py                 # everything (about 5 minutes on 2 cores)
    python bench/whisper_overhead.py --parts long    # one part: overhead, long

Model: a whisper-tiny-shaped CT2 model (384-d, 4+4 layers, random weights, int8) built offline by
tests/fixtures/whisper.py. Random weights decode nonsense until the token limit, so decoding is bounded
the same way on both sides (greedy, temperature 0 without fallback, `max_new_tokens`, no previous-text
conditioning); the work per request is therefore the same, which is what an overhead ratio needs.

overhead: end-to-end HTTP (multipart upload of a WAV file to /v1/audio/transcriptions on a uvicorn
server in a subprocess, response_format=json) vs `WhisperModel.transcribe(same file)` in this process,
median of --runs runs each, for a 5 s and a 60 s clip. A 60 s file goes through the server's VAD and the
batched path, so its direct twin is `BatchedInferencePipeline.transcribe(file)` (faster-whisper's own
VAD + batching): the thing a user would otherwise write.

long: a 10-minute file through the engine, sequential (Whisper's 30 s sliding window) vs batched (the
server's VAD regions packed into 30 s clips, `batch_size` clips per forward pass); audio-seconds/second.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "src"), str(ROOT)]

from bench._harness import EngineSeconds, engine_seconds, free_port, server_process  # noqa: E402
from tests.fixtures.speech import SAMPLE_RATE, long_speech, speech_clip, write_wav  # noqa: E402
from tests.fixtures.whisper import build_whisper  # noqa: E402

from talkies.engines.base import EngineContext, Region, TranscriptionRequest  # noqa: E402
from talkies.registry import ModelSpec  # noqa: E402

MAX_NEW_TOKENS = 32
BOUNDED: dict[str, Any] = {
    "beam_size": 1,
    "max_new_tokens": MAX_NEW_TOKENS,
    "condition_on_previous_text": False,
}
# What the server runs for response_format json / verbose_json: no word timestamps unless a request asks
# for them (timestamp_granularities[]=word).
DIRECT: dict[str, Any] = {**BOUNDED, "language": "en", "temperature": 0.0, "word_timestamps": False}
SLUG = "whisper-tiny"


def median_time(fn: Callable[[], object], runs: int) -> tuple[float, list[float]]:
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times), times


# --- direct ----------------------------------------------------------------------------------------------


def direct_sequential(model: Any, path: Path) -> Callable[[], object]:
    """5 s: decode + `WhisperModel.transcribe`, what the server's sequential path runs.

    The file is decoded with talkies' decoder (PyAV, as faster-whisper's own `decode_audio`) so that the
    model sees bit-identical samples on both sides: a random-weight model's output, and so its work, can
    change with the last bit of the input.
    """
    from talkies.audio.decode import decode_audio

    return lambda: text_of(model.transcribe(decode_audio(path), **DIRECT)[0])


def text_of(segments: Any) -> list[str]:
    """Segment texts, sorted: the engine orders segments by time, faster-whisper by window."""
    return sorted(segment.text for segment in segments)


def direct_same_work(model: Any, path: Path) -> Callable[[], object]:
    """60 s, the same work as the server minus HTTP: decode, talkies' VAD, packed clips, batched pipeline."""
    from faster_whisper import BatchedInferencePipeline

    from talkies.audio.decode import decode_audio
    from talkies.audio.vad import VadOptions, speech_regions
    from talkies.engines.whisper.timeline import clip_timestamps

    pipeline = BatchedInferencePipeline(model)
    kwargs = {k: v for k, v in DIRECT.items() if k != "condition_on_previous_text"}

    def call() -> object:
        pcm = decode_audio(path)
        clips = clip_timestamps(tuple(speech_regions(pcm, VadOptions())), len(pcm) / SAMPLE_RATE)
        segments, _ = pipeline.transcribe(
            pcm, clip_timestamps=clips, batch_size=8, without_timestamps=False, vad_filter=False, **kwargs
        )
        return text_of(segments)

    return call


def direct_own_vad(model: Any, path: Path) -> Callable[[], object]:
    """60 s as a faster-whisper user would write it: its batched pipeline with its own VAD."""
    from faster_whisper import BatchedInferencePipeline

    pipeline = BatchedInferencePipeline(model)
    kwargs = {k: v for k, v in DIRECT.items() if k != "condition_on_previous_text"}
    return lambda: list(pipeline.transcribe(str(path), batch_size=8, without_timestamps=False, **kwargs)[0])


def breakdown(model_dir: Path, path: Path, short: Path, threads: int, runs: int) -> dict[str, float]:
    """Where a 60 s request's time goes, stage by stage, in process (medians); plus decoding the 5 s file."""
    from talkies.audio.decode import decode_audio
    from talkies.audio.vad import VadOptions, speech_regions
    from talkies.engines.whisper.engine import WhisperEngine

    spec = ModelSpec(slug=SLUG, executor="whisper", repo="test/whisper-tiny")
    engine = WhisperEngine(spec, EngineContext(SLUG, model_dir, "cpu", threads, {**BOUNDED, "batch_size": 8}))
    engine.load()
    pcm = decode_audio(path)
    regions = tuple(speech_regions(pcm, VadOptions()))
    request = TranscriptionRequest(audio=pcm, language="en", temperature=0.0, regions=regions)
    stages = {
        "decode 5 s (PyAV)": lambda: decode_audio(short),
        "decode (PyAV)": lambda: decode_audio(path),
        "VAD (Silero ONNX)": lambda: speech_regions(pcm, VadOptions()),
        "engine.transcribe (batched)": lambda: engine.transcribe(request),
    }
    out = {name: median_time(fn, runs)[0] for name, fn in stages.items()}
    engine.unload()
    return out


# --- HTTP ------------------------------------------------------------------------------------------------


def serve(port: int, data_dir: Path, threads: int) -> None:
    """The server half (run in a subprocess): the real app, whose engine factory adds the bounds."""
    import json

    import uvicorn

    from talkies.api.app import create_app
    from talkies.engines import create_engine
    from talkies.settings import load_settings

    registry = data_dir / "models.json"
    registry.write_text(json.dumps({"models": {SLUG: {"executor": "whisper", "repo": "test/whisper-tiny"}}}))

    def bounded(spec: ModelSpec, context: EngineContext) -> Any:
        return create_engine(spec, replace(context, options={**context.options, **BOUNDED}))

    timed = EngineSeconds(bounded)
    settings = load_settings(models_file=registry, data_dir=data_dir, cpu_threads=threads, device="cpu")
    app = create_app(settings, engine_factory=timed)
    timed.add_route(app)
    logging.disable(logging.INFO)  # a log line per request would be timed too
    uvicorn.run(app, host="127.0.0.1", port=port, log_level="warning", access_log=False)


@contextlib.contextmanager
def server(threads: int) -> Iterator[str]:
    from tests.fixtures.cache import install_snapshot

    with tempfile.TemporaryDirectory() as tmp:
        data_dir = Path(tmp)
        install_snapshot(build_whisper("tiny"), data_dir, SLUG)
        port = free_port()
        argv = [sys.executable, __file__, "--serve", str(port), str(data_dir), str(threads)]
        with server_process(argv, port, env={**os.environ, "HF_HUB_OFFLINE": "1"}) as url:
            yield url


def http_call(client: Any, url: str, path: Path, response_format: str = "json") -> Callable[[], Any]:
    data = path.read_bytes()
    form = {"model": SLUG, "language": "en", "temperature": "0", "response_format": response_format}

    def call() -> object:
        response = client.post(
            f"{url}/v1/audio/transcriptions", data=form, files={"file": (path.name, data, "audio/wav")}
        )
        response.raise_for_status()
        return response.json()

    return call


def overhead(runs: int, threads: int) -> None:
    import httpx
    from faster_whisper import WhisperModel

    with tempfile.TemporaryDirectory() as tmp:
        short = write_wav(Path(tmp) / "5s.wav", speech_clip(5.0))
        long = write_wav(Path(tmp) / "60s.wav", long_speech(60.0).audio)
        model_dir = build_whisper("tiny")
        model = WhisperModel(str(model_dir), device="cpu", compute_type="int8", cpu_threads=threads)
        stages = breakdown(model_dir, long, short, threads, runs)
        calls: dict[str, Callable[[], object]] = {
            "5 s direct": direct_sequential(model, short),
            "60 s direct (same work)": direct_same_work(model, long),
            "60 s direct (faster-whisper's own VAD)": direct_own_vad(model, long),
        }
        with server(threads) as url, httpx.Client(timeout=600) as client:
            calls["5 s HTTP"] = http_call(client, url, short)
            calls["60 s HTTP"] = http_call(client, url, long)
            first = {name: call() for name, call in calls.items()}  # warm-up: the first HTTP call loads
            verbose = {
                seconds: sorted(s["text"] for s in http_call(client, url, path, "verbose_json")()["segments"])
                for seconds, path in ((5, short), (60, long))
            }
            same = verbose[5] == first["5 s direct"] and verbose[60] == first["60 s direct (same work)"]
            engine_seconds(client, url)  # drop the warm-up's
            times: dict[str, list[float]] = {name: [] for name in calls}
            outside: dict[str, list[float]] = {"5 s HTTP": [], "60 s HTTP": []}
            for _ in range(runs):  # interleaved, so the shared machine's load hits every variant alike
                for name, call in calls.items():
                    start = time.perf_counter()
                    call()
                    times[name].append(time.perf_counter() - start)
                    if name in outside:  # HTTP wall time minus the engine's time in that same request
                        outside[name].append(times[name][-1] - engine_seconds(client, url))
        del model
    med = {name: statistics.median(values) for name, values in times.items()}
    print(f"\n## overhead (tiny shape, {threads} threads, median of {runs}, max_new_tokens={MAX_NEW_TOKENS})")
    print("| clip | direct faster-whisper | talkies HTTP | ratio | extra |")
    print("|---|---|---|---|---|")
    for label, direct, http in (
        ("5 s", "5 s direct", "5 s HTTP"),
        ("60 s", "60 s direct (same work)", "60 s HTTP"),
        ("60 s vs faster-whisper's own VAD", "60 s direct (faster-whisper's own VAD)", "60 s HTTP"),
    ):
        d, h = med[direct], med[http]
        print(f"| {label} | {d * 1000:.0f} ms | {h * 1000:.0f} ms | {h / d:.3f} | {(h - d) * 1000:+.0f} ms |")
    print(f"\nsame work on both sides (the same segments direct and over HTTP): {same}")
    print("\nall runs (ms): " + "; ".join(f"{k}: {[round(v * 1000) for v in vs]}" for k, vs in times.items()))
    print("\ntalkies' own share of each HTTP request (wall minus engine.transcribe in it; medians):")
    for name, values in outside.items():
        print(
            f"- {name}: {statistics.median(values) * 1000:.0f} ms (runs: {[round(v * 1000) for v in values]})"
        )
    # What talkies adds beyond the work a direct caller does too (decoding the file; VAD on the long one):
    # HTTP, multipart upload to a temporary file, probing, pool, thread hops, rendering.
    share = {name: statistics.median(values) for name, values in outside.items()}
    own = {
        5: share["5 s HTTP"] - stages["decode 5 s (PyAV)"],
        60: share["60 s HTTP"] - stages["decode (PyAV)"] - stages["VAD (Silero ONNX)"],
    }
    work = {5: med["5 s direct"], 60: med["60 s direct (same work)"]}
    print("\ntalkies-only overhead (share minus the decode/VAD a direct caller pays too) -> implied ratio:")
    for seconds in (5, 60):
        implied = (work[seconds] + own[seconds]) / work[seconds]
        print(f"- {seconds} s: {own[seconds] * 1000:+.0f} ms -> {implied:.3f}")
    print("\n60 s request, stage by stage in process (medians):")
    for name, seconds in stages.items():
        print(f"- {name}: {seconds * 1000:.0f} ms")


# --- long file -------------------------------------------------------------------------------------------


def vad_regions(audio: Any) -> tuple[tuple[Region, ...], float, str]:
    """The server's VAD when this build has it, else faster-whisper's (the same Silero network)."""
    start = time.perf_counter()
    try:
        from talkies.audio.vad import VadOptions, speech_regions

        regions = tuple(speech_regions(audio, VadOptions()))
        source = "talkies.audio.vad"
    except ImportError:
        from faster_whisper.vad import VadOptions as FwVad
        from faster_whisper.vad import get_speech_timestamps

        spans = get_speech_timestamps(audio, FwVad(min_silence_duration_ms=500, speech_pad_ms=200))
        regions = tuple(Region(s["start"] / SAMPLE_RATE, s["end"] / SAMPLE_RATE) for s in spans)
        source = "faster_whisper.vad"
    return regions, time.perf_counter() - start, source


def count_encoder_windows(engine: Any) -> list[int]:
    """Count the 30 s windows the encoder sees (the cost that batching and packing cut)."""
    counter = [0]
    model = engine._model
    encode = model.encode

    def counting(features: Any) -> Any:
        counter[0] += features.shape[0] if features.ndim == 3 else 1
        return encode(features)

    model.encode = counting
    return counter


def long_file(threads: int, minutes: float, unpacked: bool, repeat: int) -> None:
    from talkies.engines.whisper.engine import WhisperEngine

    speech = long_speech(minutes * 60)
    regions, vad_s, vad_source = vad_regions(speech.audio)
    spec = ModelSpec(slug=SLUG, executor="whisper", repo="test/whisper-tiny")
    paths = [
        ("sequential (30 s sliding window)", 1, 3.0, False),
        ("batched, packed clips, batch 1", 1, 3.0, True),
        ("batched, packed clips, batch 8", 8, 3.0, True),
        ("batched, packed clips, batch 16", 16, 3.0, True),
    ]
    if unpacked:  # one 30 s encoder window per utterance: slow, so only on request
        paths.insert(1, ("batched, one clip per VAD region, batch 8", 8, 0.0, True))
    engines = []
    for _, batch_size, gap, _ in paths:
        options = {**BOUNDED, "batch_size": batch_size, "max_region_gap": gap}
        engine = WhisperEngine(spec, EngineContext(SLUG, build_whisper("tiny"), "cpu", threads, options))
        engine.load()
        engines.append((engine, count_encoder_windows(engine)))
    times: list[list[float]] = [[] for _ in paths]
    stats: list[tuple[int, int]] = [(0, 0)] * len(paths)
    for _ in range(repeat):  # rounds interleave the paths, so the shared machine's load hits all alike
        for index, ((_, _, _, use_regions), (engine, encoded)) in enumerate(zip(paths, engines, strict=True)):
            encoded[0] = 0
            request = TranscriptionRequest(
                audio=speech.audio, language="en", temperature=0.0, regions=regions if use_regions else None
            )
            start = time.perf_counter()
            result = engine.transcribe(request)
            times[index].append(time.perf_counter() - start)
            stats[index] = (len(result.segments), encoded[0])
    for engine, _ in engines:
        engine.unload()
    print(
        f"\n## long file ({minutes:.0f} min, tiny shape, {threads} threads, max_new_tokens={MAX_NEW_TOKENS},"
        f" median of {repeat})"
    )
    print(f"VAD ({vad_source}): {len(regions)} regions in {vad_s:.2f} s (not in the batched times below)")
    print("| path | time | audio-s/s | segments | 30 s windows encoded | runs |")
    print("|---|---|---|---|---|---|")
    for (label, *_), runs, (segments, windows) in zip(paths, times, stats, strict=True):
        elapsed = statistics.median(runs)
        all_runs = ", ".join(f"{r:.1f}" for r in runs)
        speed = speech.duration / elapsed
        print(f"| {label} | {elapsed:.1f} s | {speed:.1f} | {segments} | {windows} | {all_runs} |")


def main() -> None:
    if len(sys.argv) == 5 and sys.argv[1] == "--serve":
        serve(int(sys.argv[2]), Path(sys.argv[3]), int(sys.argv[4]))
        return
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--parts", default="overhead,long")
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--threads", type=int, default=min(2, len(os.sched_getaffinity(0))))
    parser.add_argument("--minutes", type=float, default=10.0)
    parser.add_argument("--unpacked", action="store_true", help="also time one clip per VAD region")
    parser.add_argument("--repeat", type=int, default=3, help="rounds of the long-file part")
    args = parser.parse_args()
    parts = args.parts.split(",")
    if "overhead" in parts:
        overhead(args.runs, args.threads)
    if "long" in parts:
        long_file(args.threads, args.minutes, args.unpacked, args.repeat)


if __name__ == "__main__":
    main()
