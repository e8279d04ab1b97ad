"""Kokoro-82M on both executors, side by side: real-time factor and time to the first chunk.

    python bench/kokoro_rtf.py [--repeats 5] [--threads 1] [--device cpu] [--model-dir DIR --onnx-dir DIR]

Without --model-dir / --onnx-dir it uses the random-weight Kokoro-82M the tests build (the real
architecture and size, so compute per phoneme matches the real model; the duration head is fixed at
75 ms per phoneme, so the clip lengths are realistic too). Pass real snapshots to measure those.

* RTF: synthesis wall time / audio duration for a 100-character sentence (median of --repeats).
* First chunk: for a five-sentence paragraph, the time until the engine yields its first PCM chunk vs
  the time for the whole clip (medians). Sentence-chunked synthesis makes the first much shorter.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from talkies.engines.base import EngineContext, SpeechRequest
from talkies.engines.kokoro.base import KokoroBase
from talkies.registry import ModelSpec

SENTENCE = (  # 100 characters
    "The quick brown fox jumps over the lazy dog, while the server streams audio to every waiting client."
)
PARAGRAPH = (
    "Kokoro is a small text to speech model. It runs well on an ordinary processor. "
    "Long input is cut at sentence boundaries. Each sentence is synthesized as soon as the last one is done. "
    "So the first audio is ready long before the whole paragraph."
)
EXECUTORS = {
    "kokoro": ("talkies.engines.kokoro.pytorch:KokoroEngine", "hexgrad/Kokoro-82M"),
    "kokoro_nvidia": ("talkies.engines.kokoro.onnx:KokoroOnnxEngine", "nvidia/kokoro-82M-onnx-opt"),
}


def make(executor: str, model_dir: Path, device: str, threads: int) -> KokoroBase:
    from talkies.engines import engine_class

    _, repo = EXECUTORS[executor]
    spec = ModelSpec(slug=executor, executor=executor, repo=repo)
    context = EngineContext(slug=executor, model_dir=model_dir, device=device, cpu_threads=threads)
    engine = engine_class(executor)(spec, context)  # type: ignore[call-arg]
    assert isinstance(engine, KokoroBase)
    return engine


def timed(engine: KokoroBase, text: str) -> tuple[float, float, float]:
    """(seconds to the first chunk, seconds for all, audio seconds)."""
    start = time.perf_counter()
    first = None
    samples = 0
    for chunk in engine.synthesize(SpeechRequest(text=text, voice="af_heart")):
        if first is None:
            first = time.perf_counter() - start
        samples += chunk.pcm.size
    total = time.perf_counter() - start
    return first or total, total, samples / 24_000


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--model-dir", type=Path)
    parser.add_argument("--onnx-dir", type=Path)
    args = parser.parse_args()
    if args.model_dir is None or args.onnx_dir is None:
        from tests.fixtures.kokoro import build_kokoro, build_kokoro_onnx

        args.model_dir = args.model_dir or build_kokoro()
        args.onnx_dir = args.onnx_dir or build_kokoro_onnx()
    dirs = {"kokoro": args.model_dir, "kokoro_nvidia": args.onnx_dir}

    print(f"sentence: {len(SENTENCE)} chars; paragraph: 5 sentences, {len(PARAGRAPH)} chars")
    print(f"threads={args.threads} device={args.device} repeats={args.repeats}\n")
    header = f"{'executor':<14} {'load s':>7} {'audio s':>8} {'synth s':>8} {'RTF':>6}"
    header += f" {'para audio s':>12} {'first chunk s':>13} {'whole s':>8} {'first/whole':>11}"
    print(header)
    for executor in EXECUTORS:
        engine = make(executor, dirs[executor], args.device, args.threads)
        start = time.perf_counter()
        engine.load()
        load = time.perf_counter() - start
        timed(engine, "Warm up.")
        runs = [timed(engine, SENTENCE) for _ in range(args.repeats)]
        synth = statistics.median(r[1] for r in runs)
        audio = runs[0][2]
        para = [timed(engine, PARAGRAPH) for _ in range(args.repeats)]
        first = statistics.median(r[0] for r in para)
        whole = statistics.median(r[1] for r in para)
        print(
            f"{executor:<14} {load:>7.2f} {audio:>8.2f} {synth:>8.2f} {synth / audio:>6.2f}"
            f" {para[0][2]:>12.2f} {first:>13.2f} {whole:>8.2f} {first / whole:>11.2f}",
            flush=True,
        )
        engine.unload()


if __name__ == "__main__":
    main()
