"""Qwen3-TTS on the CPU runtime (qwen-tts on transformers): real-time factor and first audio, per mode.

    python bench/qwen3_rtf.py                              # tiny and full shape, three modes
    python bench/qwen3_rtf.py --shapes tiny --repeats 5
    python bench/qwen3_rtf.py --shapes full --modes custom_voice --frames 50

About 20 minutes with the full shape on a busy 2-core machine (plus ~6 minutes to build the three 2.3 GB
checkpoints the first time); `--shapes tiny` takes about two.

Models: random-weight checkpoints built by tests/fixtures/qwen3.py. `tiny` is hidden 64, 2 layers (seconds
to build). `full` is the real 0.6B talker (hidden 1024, 28 layers, 16 heads / 8 KV heads, a 5-layer code
predictor for the 15 residual code groups; ~2.4 GB of float32 safetensors per mode, built once into the test
cache) with the tiny 12 Hz speech tokenizer, so the figures cover the talker, which is where the real model
spends its time, and understate the codec decoder's share. Voice design only exists as a 1.7B checkpoint
upstream; here it runs on the 0.6B shape, so its figure is a lower bound for the real one (hidden 2048).

Each mode loads the real engine on `cpu` (the talkies engine class, in this process), then synthesizes a
sentence --repeats times with `max_new_tokens` = --frames codec frames (12.5 frames = 1 s of 24 kHz audio):
random weights never choose end-of-speech, so every run produces exactly that much audio. Modes and their
requests: base (`qwen3-tts-0.6b`, the built-in starter voice `alloy` with its transcript: in-context
cloning), custom_voice (`qwen3-tts-0.6b-custom`, speaker Ryan), voice_design (`qwen3-tts-1.7b-design`,
a voice description in `instructions`). Sampling as the snapshot's generation_config (do_sample, top_k 50).

* first audio: seconds from the call to the first PCM chunk (the engine streams: first chunk after 3 frames)
* RTF: wall time for the whole clip / audio seconds (above 1: slower than real time)

Without the `qwen3` extra (qwen-tts, transformers) it says so and exits 0.
"""

from __future__ import annotations

import argparse
import importlib.util
import logging
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "src"), str(ROOT)]

TEXT = "The quick brown fox jumps over the lazy dog, and the server streams the audio as it goes."
MODES: dict[str, tuple[str, dict[str, Any]]] = {
    "base": ("qwen3-tts-0.6b", {"voice": "alloy"}),
    "custom_voice": ("qwen3-tts-0.6b-custom", {"voice": "Ryan"}),
    "voice_design": (
        "qwen3-tts-1.7b-design",
        {"voice": "design", "instructions": "A warm, friendly middle-aged male voice, calm and clear."},
    ),
}
FRAMES_PER_SECOND = 12.5


def measure(mode: str, shape: str, data_dir: Path, threads: int, frames: int, repeats: int) -> dict[str, Any]:
    from tests.fixtures.qwen3 import SLUG_SHAPES, install_qwen3

    from talkies.engines.base import EngineContext, SpeechRequest
    from talkies.engines.qwen3.engine import Qwen3Engine
    from talkies.registry.schema import ModelSpec

    slug, fields = MODES[mode]
    started = time.perf_counter()
    model_dir = install_qwen3(data_dir, slug, shape)
    build_s = time.perf_counter() - started
    spec = ModelSpec(slug=slug, executor="qwen3_tts", repo="test/qwen3", qwen3_mode=SLUG_SHAPES[slug][0])
    options = {"qwen3_voices_dir": str(ROOT / "src" / "talkies" / "data" / "qwen3-voices")}
    engine = Qwen3Engine(spec, EngineContext(slug, model_dir, "cpu", threads, options))
    started = time.perf_counter()
    engine.load()
    load_s = time.perf_counter() - started

    def synthesize(max_frames: int) -> tuple[float, float, float]:
        request = SpeechRequest(text=TEXT, options={"max_new_tokens": max_frames}, **fields)
        begin = time.perf_counter()
        first: float | None = None
        samples = 0
        rate = 24_000
        for chunk in engine.synthesize(request):
            first = first if first is not None else time.perf_counter() - begin
            samples += len(chunk.pcm)
            rate = chunk.sample_rate
        return first or 0.0, time.perf_counter() - begin, samples / rate

    synthesize(4)  # warm-up: first-call allocations, the reference voice's prompt (cached by the runtime)
    runs = [synthesize(frames) for _ in range(repeats)]
    engine.unload()
    audio = statistics.median(r[2] for r in runs)
    return {
        "mode": mode,
        "slug": slug,
        "build_or_cache_s": build_s,
        "load_s": load_s,
        "audio_s": audio,
        "first_s": statistics.median(r[0] for r in runs),
        "total_s": statistics.median(r[1] for r in runs),
        "rtf": statistics.median(r[1] / r[2] for r in runs),
        "runs": [round(r[1], 2) for r in runs],
    }


def main() -> None:
    formatter = argparse.RawDescriptionHelpFormatter
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=formatter)
    parser.add_argument("--shapes", default="tiny,full")
    parser.add_argument("--modes", default=",".join(MODES))
    parser.add_argument("--frames", type=int, default=25, help="codec frames per clip (12.5 per second)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=min(2, len(os.sched_getaffinity(0))))
    args = parser.parse_args()
    missing = [
        name for name in ("qwen_tts", "transformers", "torch") if importlib.util.find_spec(name) is None
    ]
    if missing:
        print(f"qwen3_rtf: {', '.join(missing)} not installed (pip install 'talkies[qwen3]'); skipped")
        return
    modes = [m for m in args.modes.split(",") if m]
    if set(modes) - set(MODES):
        parser.error(f"unknown modes {sorted(set(modes) - set(MODES))}; known: {', '.join(MODES)}")
    logging.disable(logging.WARNING)
    import torch

    audio_s = args.frames / FRAMES_PER_SECOND
    for shape in args.shapes.split(","):
        with tempfile.TemporaryDirectory() as tmp:
            rows = [
                measure(mode, shape, Path(tmp), args.threads, args.frames, args.repeats) for mode in modes
            ]
        print(
            f"\n## {shape} shape, CPU runtime, {args.threads} thread(s), torch {torch.__version__},"
            f" {args.frames} frames (~{audio_s:.1f} s of audio), median of {args.repeats}"
        )
        print("| mode | slug | load s | first audio s | clip s | audio s | RTF | runs (s) |")
        print("|---|---|---|---|---|---|---|---|")
        for r in rows:
            print(
                f"| {r['mode']} | `{r['slug']}` | {r['load_s']:.1f} |"
                f" {r['first_s']:.2f} | {r['total_s']:.2f} | {r['audio_s']:.2f} | {r['rtf']:.2f} |"
                f" {r['runs']} |"
            )
        built = ", ".join(f"{r['mode']} {r['build_or_cache_s']:.0f} s" for r in rows)
        print(f"(model build or cache copy: {built})")


if __name__ == "__main__":
    main()
