"""GPU check for the Qwen3-TTS CUDA runtime (faster-qwen3-tts): run by hand on a CUDA machine.

    python bench/qwen3_cuda_check.py [--shape tiny|full]

Builds random checkpoints of the three shapes (tests/fixtures/qwen3.py), loads each through the real engine
on `cuda` (CUDA-graph warm-up inside load), synthesizes a few frames per mode and prints load time, time to
first audio and real-time factor per mode as one JSON line each. Without a GPU it says so and exits 0
(`make bench` runs every script).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "src"), str(ROOT)]

from tests.fixtures.qwen3 import SLUG_SHAPES, install_qwen3  # noqa: E402

from talkies.engines.base import EngineContext, SpeechRequest  # noqa: E402
from talkies.engines.qwen3.engine import Qwen3Engine  # noqa: E402
from talkies.registry.schema import ModelSpec  # noqa: E402

REQUESTS = {
    "qwen3-tts-0.6b": {"voice": "alloy"},
    "qwen3-tts-1.7b-custom": {"voice": "Ryan", "instructions": "Speak calmly."},
    "qwen3-tts-1.7b-design": {"voice": "design", "instructions": "A warm, friendly voice."},
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--shape", default="tiny", choices=("tiny", "full"))
    parser.add_argument("--frames", type=int, default=48)
    args = parser.parse_args()
    import torch

    if not torch.cuda.is_available():
        print("qwen3_cuda_check: no CUDA device here; run it on a GPU machine")
        return
    data = Path(tempfile.mkdtemp(prefix="qwen3-cuda-"))
    for slug, extra in REQUESTS.items():
        install_qwen3(data, slug, args.shape)
        spec = ModelSpec(slug=slug, executor="qwen3_tts", repo="test/x", qwen3_mode=SLUG_SHAPES[slug][0])
        context = EngineContext(slug=slug, model_dir=data / "models" / slug, device="cuda")
        engine = Qwen3Engine(spec, context)
        started = time.perf_counter()
        engine.load()
        loaded = time.perf_counter() - started
        options: dict[str, object] = {"max_new_tokens": args.frames}
        request = SpeechRequest(text="Hello from the GPU check.", options=options, **extra)
        started, first, samples = time.perf_counter(), None, 0
        for chunk in engine.synthesize(request):
            first = first if first is not None else time.perf_counter() - started
            samples += len(chunk.pcm)
        total = time.perf_counter() - started
        audio = samples / 24_000
        figures = {"slug": slug, "shape": args.shape, "load_s": loaded, "ttfa_s": first, "audio_s": audio}
        print(json.dumps({**figures, "rtf": total / audio if audio else None}))
        engine.unload()


if __name__ == "__main__":
    main()
