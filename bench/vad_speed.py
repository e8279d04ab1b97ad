"""Silero VAD speed: the stock per-window loop vs talkies' batched sequence model, side by side.

    python bench/vad_speed.py [--minutes 10] [--repeats 3]

The audio is espeak-ng speech alternating with silence and low noise (so both paths do real work), at
16 kHz. Both paths run on one intra-op thread; medians of `--repeats` runs are printed with their ratio,
plus the largest difference between the two paths' probabilities.
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import subprocess
import tempfile
import time
from pathlib import Path

import numpy as np
import numpy.typing as npt

from talkies.audio.decode import decode_audio
from talkies.audio.vad import WINDOW, VadOptions, model_path, speech_probabilities, speech_regions


def make_audio(minutes: float) -> npt.NDArray[np.float32]:
    rng = np.random.default_rng(0)
    if shutil.which("espeak-ng"):
        with tempfile.TemporaryDirectory() as tmp:
            wav = Path(tmp) / "s.wav"
            subprocess.run(
                [
                    "espeak-ng",
                    "-w",
                    str(wav),
                    "Measuring how fast voice activity detection runs "
                    "on a long recording with pauses between sentences.",
                ],
                check=True,
            )
            speech = decode_audio(wav)
    else:
        speech = (0.3 * rng.standard_normal(16_000 * 4)).astype(np.float32)
    pause = (0.003 * rng.standard_normal(16_000 * 2)).astype(np.float32)
    unit = np.concatenate([speech, pause])
    reps = int(np.ceil(minutes * 60 * 16_000 / unit.size))
    return np.tile(unit, reps)[: int(minutes * 60 * 16_000)]


def naive_probabilities(audio: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
    """What silero's OnnxWrapper does: one session.run per 512-sample window, state carried in Python."""
    import onnxruntime

    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    options.log_severity_level = 3
    session = onnxruntime.InferenceSession(
        str(model_path("silero_vad.onnx")), sess_options=options, providers=["CPUExecutionProvider"]
    )
    padded = np.zeros(-(-audio.size // WINDOW) * WINDOW, np.float32)
    padded[: audio.size] = audio
    state = np.zeros((2, 1, 128), np.float32)
    context = np.zeros(64, np.float32)
    rate = np.array(16_000, np.int64)
    out = np.empty(padded.size // WINDOW, np.float32)
    for index, window in enumerate(padded.reshape(-1, WINDOW)):
        probs, state = session.run(
            None, {"input": np.concatenate([context, window])[None], "state": state, "sr": rate}
        )
        context = window[-64:]
        out[index] = probs[0, 0]
    return out


def median_time(fn: object, repeats: int) -> tuple[float, object]:
    times, result = [], None
    for _ in range(repeats):
        start = time.perf_counter()
        result = fn()  # type: ignore[operator]
        times.append(time.perf_counter() - start)
    return statistics.median(times), result


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--minutes", type=float, default=10.0)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    audio = make_audio(args.minutes)
    speech_probabilities(audio[:16_000])  # create the session outside the timings
    naive_s, naive = median_time(lambda: naive_probabilities(audio), args.repeats)
    batched_s, batched = median_time(lambda: speech_probabilities(audio), args.repeats)
    regions_s, regions = median_time(lambda: speech_regions(audio, VadOptions()), args.repeats)
    seconds = audio.size / 16_000
    diff = float(np.abs(np.asarray(naive) - np.asarray(batched)).max())
    print(f"audio: {args.minutes:g} min at 16 kHz, {audio.size // WINDOW} windows, medians of {args.repeats}")
    print(f"naive per-window loop     {naive_s:7.3f} s  ({seconds / naive_s:6.0f}x real time)")
    print(f"batched sequence model    {batched_s:7.3f} s  ({seconds / batched_s:6.0f}x real time)")
    print(f"speech_regions (all)      {regions_s:7.3f} s  -> {len(regions)} regions")  # type: ignore[arg-type]
    print(f"speed-up                  {naive_s / batched_s:7.2f}x")
    print(f"max |naive - batched|     {diff:.2e}")


if __name__ == "__main__":
    main()
