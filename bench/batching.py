"""Cross-request batching: throughput and latency at concurrency 1/4/8, batching on vs off, side by side.

Engine level (no HTTP): one loaded engine per mode, each request a clip of synthetic speech with its VAD
regions (the path long files take), `concurrency` requests in threads at once, `--rounds` waves; each row
is measured `--repeats` times, off and on alternating which goes first, and shows the medians.
Batching off is the per-request path (`TALKIES_BATCHING=false`); on collects the units of concurrent
requests with the executor's default limits (docs/batching.md).

--family whisper: the real Whisper base (CTranslate2 int8, `--model-dir`, default the fetched
tests/fixtures/real_models.py copy), beam 1. --family parakeet_cpp / parakeet: the tiny generated
checkpoints of the engine tests (onnx-asr TDT export / NeMo TDT): random weights, so the figures show the
shape of the gain (per-call overheads saved), not a real model's.

    python bench/batching.py [--family whisper] [--clips 10,60] [--concurrency 1,4,8] [--rounds 2]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from tests.fixtures.speech import long_speech

from talkies.engines import create_engine
from talkies.engines.base import EngineContext, Region, TranscriptionRequest
from talkies.registry import ModelSpec

VAD_THRESHOLD_S = 30.0


def engine(family: str, model_dir: Path, batching: bool, threads: int) -> Any:
    repo = {"whisper": "Systran/faster-whisper-base"}.get(family, "test/tiny")
    spec = ModelSpec(slug="bench", executor=family, repo=repo)
    options: dict[str, object] = {"batching": batching}
    if family == "whisper":
        options["beam_size"] = 1
    eng = create_engine(spec, EngineContext("bench", model_dir, "cpu", cpu_threads=threads, options=options))
    eng.load()
    return eng


def model_dir_for(family: str, given: Path | None, tmp: Path) -> Path:
    if given is not None:
        return given
    if family == "whisper":
        from tests.fixtures.real_models import fetch_real_models

        return fetch_real_models() / "whisper-base"
    if family == "parakeet_cpp":
        from tests.fixtures.parakeet_onnx import build_parakeet_onnx

        return build_parakeet_onnx("tdt")
    from tests.fixtures.nemo import install_nemo

    install_nemo("tdt", tmp, "bench")
    return tmp / "models" / "bench"


def clip_request(seconds: float) -> TranscriptionRequest:
    """What the server hands the engine: VAD regions past TALKIES_VAD_CHUNK_THRESHOLD (30 s by default),
    the whole file otherwise (a Whisper short file with one temperature is batched as one clip)."""
    speech = long_speech(seconds, pauses=(0.3, 0.8))
    regions = tuple(Region(a, b) for a, b in speech.spans) if seconds > VAD_THRESHOLD_S else None
    return TranscriptionRequest(audio=speech.audio, regions=regions, language="en", temperature=0.0)


def run(eng: Any, req: TranscriptionRequest, concurrency: int, rounds: int) -> tuple[float, list[float]]:
    """(requests per second, each request's latency in seconds)."""
    latencies: list[float] = []
    lock = threading.Lock()

    def one(_: int) -> None:
        start = time.perf_counter()
        eng.transcribe(req)
        with lock:
            latencies.append(time.perf_counter() - start)

    eng.transcribe(req)  # warm-up
    began = time.perf_counter()
    with ThreadPoolExecutor(concurrency) as pool:
        for _ in range(rounds):
            list(pool.map(one, range(concurrency)))
    return len(latencies) / (time.perf_counter() - began), latencies


def p95(values: list[float]) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(0.95 * (len(ordered) - 1)))]


def row(engines: dict[str, Any], req: TranscriptionRequest, concurrency: int, args: Any) -> str:
    rps: dict[str, list[float]] = {"off": [], "on": []}
    p50s: dict[str, list[float]] = {"off": [], "on": []}
    p95s: dict[str, list[float]] = {"off": [], "on": []}
    for repeat in range(args.repeats):
        for mode in ("off", "on") if repeat % 2 == 0 else ("on", "off"):
            throughput, latencies = run(engines[mode], req, concurrency, args.rounds)
            rps[mode].append(throughput)
            p50s[mode].append(statistics.median(latencies))
            p95s[mode].append(p95(latencies))
    off, on = statistics.median(rps["off"]), statistics.median(rps["on"])
    return (
        f"| {len(req.audio) / 16_000:.0f} | {concurrency} | {off:.3f} | {on:.3f} | {on / off:.2f}x "
        f"| {statistics.median(p50s['off']):.2f} / {statistics.median(p95s['off']):.2f} "
        f"| {statistics.median(p50s['on']):.2f} / {statistics.median(p95s['on']):.2f} |"
    )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--family", choices=("whisper", "parakeet_cpp", "parakeet"), default="whisper")
    parser.add_argument("--model-dir", type=Path, default=None)
    parser.add_argument("--clips", default="10,60")
    parser.add_argument("--concurrency", default="1,4,8")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=3, help="measurements per row (median)")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        model_dir = model_dir_for(args.family, args.model_dir, Path(tmp))
        engines = {mode: engine(args.family, model_dir, mode == "on", args.threads) for mode in ("off", "on")}
        print(f"{args.family}: {args.repeats} repeats x {args.rounds} rounds per row, medians")
        print("| clip s | concurrency | off req/s | on req/s | speed-up | off p50/p95 s | on p50/p95 s |")
        print("|---|---|---|---|---|---|---|")
        for seconds in (float(s) for s in args.clips.split(",")):
            req = clip_request(seconds)
            for concurrency in (int(c) for c in args.concurrency.split(",")):
                print(row(engines, req, concurrency, args), flush=True)
        sizes, wait_s, timer = engines["on"].batch_stats.snapshot()
        print(
            f"batches by size (on): {dict(sorted(sizes.items()))}; closed by timer: {timer}; "
            f"wait {wait_s:.2f} s"
        )
        for eng in engines.values():
            eng.unload()


if __name__ == "__main__":
    main()
