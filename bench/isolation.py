"""Engine isolation: memory given back on unload, and what the process boundary costs per request.

    python bench/isolation.py                        # everything (a few minutes on 2 cores)
    python bench/isolation.py --parts latency --runs 31

memory: for each engine built here, a fresh interpreter (tests/engines/memory_probe.py) imports the web
stack, measures its total RSS (parent plus every descendant, psutil) idle, loads the model, serves
--requests requests, measures again (loaded), unloads and measures a last time (after unload); once with
the engine in a worker process and once in-process.

latency: the same model loaded twice in this process, in-process and behind a ProcessEngine, requests
alternating between the two in ABBA order (so drift, neighbours' load and order effects hit both alike),
--runs each; medians, and the median of the paired differences (process minus in-process); a 0.3 s
pause before each timed request, so that neither side runs while the other's threads still spin.
Requests: a 5 s transcription on a
whisper-tiny-shaped model (random weights, decoding bounded to a fixed number of tokens) and a short
synthesis on every TTS engine built here. `echo` is a test engine that does no work, so its figures are
the boundary alone (request pickling, shared memory for the audio, two pipe hops, result unpickling).

startup: the time to start a worker (spawn, imports) and load, vs loading in-process.
"""

from __future__ import annotations

import argparse
import importlib.util
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "src"), str(ROOT)]

import numpy as np  # noqa: E402
from tests.engines.memory_probe import REQUEST_OPTIONS, run_probe  # noqa: E402
from tests.fixtures.cache import install_snapshot  # noqa: E402

from talkies.engines import EXECUTORS, create_engine  # noqa: E402
from talkies.engines.base import EngineContext, SpeechRequest, TranscriptionRequest  # noqa: E402
from talkies.registry import ModelSpec  # noqa: E402
from talkies.workers import ProcessEngine  # noqa: E402

MIB = 1024 * 1024
SHORT_TEXT = "Hello there. This is a short sentence."


@dataclass
class Subject:
    name: str
    executor: str
    model_dir: Path
    target: str


def subjects(data_dir: Path, wanted: set[str]) -> list[Subject]:
    """Every engine whose module and test model can be built in this checkout."""
    found: list[Subject] = []

    def add(name: str, executor: str, build: Callable[[], Path] | None) -> None:
        if wanted and name not in wanted:
            return
        target = EXECUTORS[executor].target
        if target is None or importlib.util.find_spec(target.partition(":")[0]) is None:
            print(f"# {name}: engine not in this checkout, skipped")
            return
        found.append(Subject(name, executor, build() if build else data_dir / "models" / name, target))

    def whisper() -> Path:
        from tests.fixtures.whisper import build_whisper

        return install_snapshot(build_whisper("tiny"), data_dir, "whisper-tiny")

    def kokoro() -> Path:
        from tests.fixtures.kokoro import install_kokoro

        return install_kokoro(data_dir)

    def kokoro_onnx() -> Path:
        from tests.fixtures.kokoro import install_kokoro_onnx

        return install_kokoro_onnx(data_dir)

    add("whisper", "whisper", whisper)
    add("kokoro", "kokoro", kokoro)
    add("kokoro-onnx", "kokoro_nvidia", kokoro_onnx)
    add("espeak", "espeak", None)
    add("pocketsphinx", "pocketsphinx", None)
    return found


# --- memory ------------------------------------------------------------------------------------------


def bench_memory(items: list[Subject], requests: int) -> None:
    print("\n## Memory: server total RSS (parent + workers), MiB\n")
    print("| engine | mode | idle | loaded | after unload | kept after unload | worker |")
    print("|---|---|---:|---:|---:|---:|---|")
    for item in items:
        for mode in ("process", "inprocess"):
            f = run_probe(item.executor, item.model_dir, mode, requests)
            kept = f["unloaded"] - f["idle"]
            worker = "yes" if f["worker_pid"] else "no"
            print(
                f"| {item.name} | {mode} | {f['idle'] / MIB:.0f} | {f['loaded'] / MIB:.0f} "
                f"| {f['unloaded'] / MIB:.0f} | {kept / MIB:+.0f} ({kept / f['idle']:+.0%}) | {worker} |"
            )


# --- latency -----------------------------------------------------------------------------------------


def _spec(item: Subject) -> tuple[ModelSpec, EngineContext]:
    repo = {"repo": f"test/{item.name}"} if EXECUTORS[item.executor].needs_repo else {}
    spec = ModelSpec.model_validate({"executor": item.executor, "slug": item.name, **repo})
    options = REQUEST_OPTIONS.get(item.executor, {})
    context = EngineContext(item.name, item.model_dir, "cpu", cpu_threads=1, options=options)
    return spec, context


def _request(item: Subject, engine: Any) -> Callable[[], object]:
    if hasattr(engine, "transcribe"):
        from tests.fixtures.speech import speech_clip

        audio = np.asarray(speech_clip(5.0), dtype=np.float32)
        request = TranscriptionRequest(audio=audio, language="en", word_timestamps=False)
        return lambda: engine.transcribe(request)
    voice = next(v.name for v in engine.voices() if v.default)
    speech = SpeechRequest(text=SHORT_TEXT, voice=voice)
    return lambda: sum(len(chunk.pcm) for chunk in engine.synthesize(speech))


def _timed(call: Callable[[], object], settle: float = 0.0) -> float:
    time.sleep(settle)  # lets the other side's threads go idle (runtimes spin-wait after work)
    start = time.perf_counter()
    call()
    return time.perf_counter() - start


def _pair(calls: tuple[Callable[[], object], ...], settle: float, *, flip: bool) -> tuple[float, float]:
    """(in-process, process) times of one round; every other round runs the process request first."""
    if flip:
        proc = _timed(calls[1], settle)
        return _timed(calls[0], settle), proc
    inproc = _timed(calls[0], settle)
    return inproc, _timed(calls[1], settle)


def bench_latency(items: list[Subject], runs: int) -> None:
    print(f"\n## Latency per request, median of {runs} (alternating), ms\n")
    print("| engine | request | in-process | process | boundary (median paired diff) | share |")
    print("|---|---|---:|---:|---:|---:|")
    echo = [
        Subject("echo", "pocketsphinx", Path("/nonexistent"), "tests.engines.fake_engines:EchoTranscriber"),
        Subject("echo", "espeak", Path("/nonexistent"), "tests.engines.fake_engines:ChunkSynthesizer"),
    ]
    for item in [*echo, *items]:
        spec, context = _spec(item)
        echoing = item.name == "echo"
        local = _construct(item.target, spec, context) if echoing else create_engine(spec, context)
        remote = ProcessEngine(spec, context, target=item.target)
        local.load()
        remote.load()
        try:
            calls = (_request(item, local), _request(item, remote))
            for call in calls:
                call(), call()  # warm-up
            settle = 0.0 if item.name == "echo" else 0.3
            pairs = [_pair(calls, settle, flip=bool(i % 2)) for i in range(runs)]
        finally:
            remote.unload()
            local.unload()
        inproc = statistics.median(p[0] for p in pairs)
        proc = statistics.median(p[1] for p in pairs)
        diff = statistics.median(p[1] - p[0] for p in pairs)
        kind = "5 s transcription" if hasattr(local, "transcribe") else "short synthesis"
        share = f"{diff / inproc:+.1%}" if item.name != "echo" else "n/a"
        print(
            f"| {item.name} | {kind} | {inproc * 1e3:.2f} | {proc * 1e3:.2f} | {diff * 1e3:+.2f} | {share} |"
        )


def _construct(target: str, spec: ModelSpec, context: EngineContext) -> Any:
    from talkies.workers.worker import resolve_target

    return resolve_target(target)(spec, context)


# --- startup -----------------------------------------------------------------------------------------


def bench_startup(items: list[Subject], runs: int) -> None:
    print(f"\n## Load time, median of {runs}, s\n")
    print("| engine | in-process load | worker start + load | extra |")
    print("|---|---:|---:|---:|")
    for item in items:
        spec, context = _spec(item)
        times: dict[str, list[float]] = {"in": [], "proc": []}
        for _ in range(runs):
            local = create_engine(spec, context)
            times["in"].append(_timed(local.load))
            local.unload()
            remote = ProcessEngine(spec, context, target=item.target)
            times["proc"].append(_timed(remote.load))
            remote.unload()
        a, b = statistics.median(times["in"]), statistics.median(times["proc"])
        print(f"| {item.name} | {a:.2f} | {b:.2f} | {b - a:+.2f} |")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--parts", default="memory,latency,startup")
    parser.add_argument("--engines", default="", help="comma-separated subset, e.g. whisper,kokoro")
    parser.add_argument("--runs", type=int, default=21)
    parser.add_argument("--requests", type=int, default=3, help="requests served before 'loaded' (memory)")
    args = parser.parse_args()
    parts = set(args.parts.split(","))
    with tempfile.TemporaryDirectory(prefix="talkies-bench-") as tmp:
        items = subjects(Path(tmp), {e for e in args.engines.split(",") if e})
        print(f"# engines: {', '.join(i.name for i in items)}; python {sys.version.split()[0]}")
        if "memory" in parts:
            bench_memory(items, args.requests)
        if "latency" in parts:
            bench_latency(items, args.runs)
        if "startup" in parts:
            bench_startup(items, max(3, args.runs // 7))


if __name__ == "__main__":
    main()
