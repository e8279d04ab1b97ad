"""Kokoro ONNX: would batching sentence chunks of similar length in one call gain anything?

On the real Kokoro-82M v1.0 int8 graph (tests/fixtures/real_models.py), four sentence chunks of similar
length (concurrency 4), each phonemized by espeak-ng like the engine does. First the graph is asked for a
batch of two (does it take one?); then the four chunks run one after another in one thread vs four at
once on the shared session (what `max_concurrency` 4 gives today), `--repeats` times alternating which goes
first, medians. Voice jm_kumo, speed 1.

    python bench/kokoro_batching.py [--threads 2] [--repeats 5]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "src"), str(ROOT)]

from tests.fixtures.real_models import KOKORO_GRAPH, KOKORO_VOICE_FILE, fetch_real_models  # noqa: E402

CHUNKS = (
    "The weather is nice today, so we will walk along the river to the park.",
    "Please bring a warm coat and some water, because the wind is cold there.",
    "After lunch we can visit the old library and read about the town's history.",
    "In the evening the trains are slow, so we should leave a little bit early.",
)


def tokens_of(text: str, vocab: dict[str, int]) -> list[int]:
    from phonemizer.backend import EspeakBackend

    phonemes = EspeakBackend("en-us", preserve_punctuation=True, with_stress=True).phonemize([text])[0]
    return [vocab[ch] for ch in phonemes.strip() if ch in vocab]


def feed(tokens: list[int], style: Any, rows: int = 1) -> dict[str, Any]:
    ids = np.asarray([[0, *tokens, 0]] * rows, dtype=np.int64)
    row = np.asarray(style[len(tokens) - 1], dtype=np.float32).reshape(1, 256)
    return {"tokens": ids, "style": np.repeat(row, rows, axis=0), "speed": np.ones(rows, np.float32)}


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    import onnxruntime as ort

    models = fetch_real_models()
    vocab = json.loads((models / "kokoro-vocab.json").read_text())["vocab"]
    style = np.load(models / "kokoro-int8" / KOKORO_VOICE_FILE)["jm_kumo"]
    options = ort.SessionOptions()
    options.intra_op_num_threads = args.threads
    options.inter_op_num_threads = 1
    session = ort.InferenceSession(
        str(models / "kokoro-int8" / KOKORO_GRAPH), options, ["CPUExecutionProvider"]
    )
    print("inputs:", [(i.name, i.shape) for i in session.get_inputs()])
    print("outputs:", [(o.name, o.shape) for o in session.get_outputs()])
    chunks = [tokens_of(text, vocab) for text in CHUNKS]
    print("chunk tokens:", [len(c) for c in chunks])
    try:
        session.run(None, feed(chunks[0], style, rows=2))
        print("batch of 2: accepted")
    except Exception as exc:  # the answer this bench exists to record
        print(f"batch of 2: refused ({type(exc).__name__}: {str(exc).splitlines()[0][:160]})")

    def one(tokens: list[int]) -> float:
        return len(session.run(None, feed(tokens, style))[0].reshape(-1)) / 24_000

    audio_s = sum(one(c) for c in chunks)  # warm-up, and the seconds of speech made
    times: dict[str, list[float]] = {"sequential": [], "concurrent": []}
    with ThreadPoolExecutor(len(chunks)) as pool:
        for repeat in range(args.repeats):
            for mode in ("sequential", "concurrent") if repeat % 2 == 0 else ("concurrent", "sequential"):
                start = time.perf_counter()
                if mode == "sequential":
                    for c in chunks:
                        one(c)
                else:
                    list(pool.map(one, chunks))
                times[mode].append(time.perf_counter() - start)
    seq, conc = statistics.median(times["sequential"]), statistics.median(times["concurrent"])
    print(f"{len(chunks)} chunks, {audio_s:.1f} s of speech, {args.threads} threads, {args.repeats} repeats")
    print(f"sequential {seq:.2f} s (median), concurrent {conc:.2f} s, ratio {seq / conc:.2f}x")


if __name__ == "__main__":
    main()
