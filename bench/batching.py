"""Cross-request batching: throughput and latency at concurrency 1/4/8, batching on vs off, side by side.

Engine level (no HTTP): one loaded WhisperEngine per mode on the real Whisper base (CTranslate2 int8,
`--model-dir`, default ~/.cache/real-models/whisper-base), each request a clip of synthetic speech with
its VAD regions (the path long files take), `concurrency` requests in threads at once, `--rounds` waves.
Batching off is the per-request path (`TALKIES_BATCHING=false`); on collects the windows of concurrent
requests (max_batch_size 8, max_batch_wait_ms 10, the whisper defaults).

    python bench/batching.py [--clips 10,60] [--concurrency 1,4,8] [--rounds 2] [--threads 2]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from tests.fixtures.speech import long_speech

from talkies.engines.base import EngineContext, Region, TranscriptionRequest
from talkies.engines.whisper.engine import WhisperEngine
from talkies.registry import ModelSpec


def engine(model_dir: Path, batching: bool, threads: int) -> WhisperEngine:
    spec = ModelSpec(slug="whisper-base", executor="whisper", repo="Systran/faster-whisper-base")
    context = EngineContext(
        slug=spec.slug,
        model_dir=model_dir,
        device="cpu",
        cpu_threads=threads,
        options={"batching": batching, "beam_size": 1},
    )
    eng = WhisperEngine(spec, context)
    eng.load()
    return eng


def clip_request(seconds: float) -> TranscriptionRequest:
    speech = long_speech(seconds, pauses=(0.3, 0.8))
    regions = tuple(Region(a, b) for a, b in speech.spans)
    return TranscriptionRequest(audio=speech.audio, regions=regions, language="en", temperature=0.0)


def run(
    eng: WhisperEngine, req: TranscriptionRequest, concurrency: int, rounds: int
) -> tuple[float, list[float]]:
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


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--model-dir", type=Path, default=Path.home() / ".cache/real-models/whisper-base")
    parser.add_argument("--clips", default="10,60")
    parser.add_argument("--concurrency", default="1,4,8")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    engines = {mode: engine(args.model_dir, mode == "on", args.threads) for mode in ("off", "on")}
    print("| clip s | concurrency | off req/s | on req/s | speed-up | off p50/p95 s | on p50/p95 s |")
    print("|---|---|---|---|---|---|---|")
    for seconds in (float(s) for s in args.clips.split(",")):
        req = clip_request(seconds)
        for concurrency in (int(c) for c in args.concurrency.split(",")):
            figures = {mode: run(eng, req, concurrency, args.rounds) for mode, eng in engines.items()}
            (off_rps, off_lat), (on_rps, on_lat) = figures["off"], figures["on"]
            print(
                f"| {seconds:.0f} | {concurrency} | {off_rps:.3f} | {on_rps:.3f} | {on_rps / off_rps:.2f}x "
                f"| {statistics.median(off_lat):.2f} / {p95(off_lat):.2f} "
                f"| {statistics.median(on_lat):.2f} / {p95(on_lat):.2f} |",
                flush=True,
            )
    sizes, wait_s, timer = engines["on"].batch_stats.snapshot()
    print(
        f"batches by size (on): {dict(sorted(sizes.items()))}; closed by timer: {timer}; wait {wait_s:.2f} s"
    )
    for eng in engines.values():
        eng.unload()


if __name__ == "__main__":
    main()
