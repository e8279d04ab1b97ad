"""Parakeet on a CPU: the `parakeet_cpp` executor (onnx-asr on onnxruntime, no torch) against the `parakeet`
executor (NeMo on PyTorch), on the SAME tiny model: tests/fixtures/nemo.py's FastConformer-TDT (2 layers,
d_model 64, random weights) as a `.nemo` file and as its ONNX export (tests/fixtures/parakeet_onnx.py).

    python bench/parakeet_cpp.py                  # 3 rounds, 20 s clip, 5 transcriptions per round
    python bench/parakeet_cpp.py --rounds 5 --seconds 30

Each measurement is a fresh interpreter (this file with --child), so imports and memory are the engine's
own: the time from nothing to a loaded engine (imports included: that is what a worker pays), the process
RSS once loaded, the median wall time of the transcriptions (word timestamps on), RTF = that / audio
seconds, and the peak RSS (ru_maxrss). Rounds alternate the order (A B, B A, ...) so drift on a shared
machine hits both; the table shows medians over rounds. One thread each (cpu_threads=1).
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "src"), str(ROOT)]

EXECUTORS = {"parakeet_cpp": "onnx-asr / onnxruntime", "parakeet": "NeMo / PyTorch"}


def child(executor: str, model_dir: Path, seconds: float, runs: int) -> dict[str, Any]:
    import psutil

    started = time.perf_counter()
    from talkies.engines import create_engine
    from talkies.engines.base import EngineContext, TranscriptionRequest
    from talkies.registry import ModelSpec

    spec = ModelSpec.model_validate({"slug": model_dir.name, "executor": executor, "repo": "test/tiny"})
    engine: Any = create_engine(spec, EngineContext(model_dir.name, model_dir, "cpu", cpu_threads=1))
    engine.load()
    load = time.perf_counter() - started
    loaded_rss = psutil.Process().memory_info().rss
    from tests.fixtures.speech import speech_clip

    audio = speech_clip(seconds)
    engine.transcribe(TranscriptionRequest(audio=audio[:16000]))  # warm-up
    times = []
    words = 0
    for _ in range(runs):
        start = time.perf_counter()
        result = engine.transcribe(TranscriptionRequest(audio=audio))
        times.append(time.perf_counter() - start)
        words = sum(len(s.words) for s in result.segments)
    return {
        "load_s": load,
        "loaded_rss": loaded_rss,
        "peak_rss": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
        "transcribe_s": statistics.median(times),
        "rtf": statistics.median(times) / seconds,
        "words": words,
        "torch": "torch" in sys.modules,
    }


def measure(executor: str, model_dir: Path, seconds: float, runs: int) -> dict[str, Any]:
    command = [sys.executable, __file__, "--child", executor, str(model_dir), str(seconds), str(runs)]
    done = subprocess.run(command, capture_output=True, text=True, timeout=900, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"{executor} failed:\n{done.stderr[-3000:]}")
    figures: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return figures


def main() -> None:
    formatter = argparse.RawDescriptionHelpFormatter
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=formatter)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--runs", type=int, default=5, help="transcriptions per round")
    parser.add_argument("--child", nargs=4, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        executor, model_dir, seconds, runs = args.child
        print(json.dumps(child(executor, Path(model_dir), float(seconds), int(runs))))
        return

    from tests.fixtures.cache import install_snapshot
    from tests.fixtures.nemo import install_nemo
    from tests.fixtures.parakeet_onnx import build_parakeet_onnx

    with tempfile.TemporaryDirectory() as tmp:
        data_dir = Path(tmp)
        dirs = {
            "parakeet_cpp": install_snapshot(build_parakeet_onnx("tdt"), data_dir, "tiny-onnx"),
            "parakeet": install_nemo("tdt", data_dir, "tiny-nemo"),
        }
        results: dict[str, list[dict[str, Any]]] = {name: [] for name in EXECUTORS}
        order = list(EXECUTORS)
        for round_ in range(args.rounds):
            for executor in order if round_ % 2 == 0 else order[::-1]:
                results[executor].append(measure(executor, dirs[executor], args.seconds, args.runs))
    mib = 1024 * 1024
    print(f"tiny FastConformer-TDT, {args.seconds:.0f} s clip, 1 thread, medians of {args.rounds} rounds")
    header = f"{'executor':<14}{'runtime':<24}{'load s':>8}{'RTF':>8}{'loaded MiB':>12}{'peak MiB':>10}"
    print(f"{header}{'words':>7}  torch")
    for executor, runtime in EXECUTORS.items():
        rows = results[executor]

        def med(key: str, rows: list[dict[str, Any]] = rows) -> float:
            return statistics.median(row[key] for row in rows)

        print(
            f"{executor:<14}{runtime:<24}{med('load_s'):>8.2f}{med('rtf'):>8.4f}"
            f"{med('loaded_rss') / mib:>12.0f}{med('peak_rss') / mib:>10.0f}"
            f"{med('words'):>7.0f}  {rows[0]['torch']}"
        )


if __name__ == "__main__":
    main()
