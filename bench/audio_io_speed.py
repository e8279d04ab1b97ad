"""Audio in / out cost per request: in-process PyAV vs an ffmpeg subprocess, side by side.

    python bench/audio_io_speed.py [--repeats 7]

Decoding: a 5 s and a 60 s 44.1 kHz stereo MP3 to 16 kHz mono float32, with `decode_audio` and with
`ffmpeg -i file -f f32le -ac 1 -ar 16000 -` (what a subprocess-based server does). Encoding: 5 s of
24 kHz speech-like audio into each response format with `encode_speech`. Medians of `--repeats`.
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import subprocess
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from talkies.audio.decode import decode_audio
from talkies.audio.encode import SPEECH_FORMATS, encode_speech


def median_ms(fn: Callable[[], object], repeats: int) -> float:
    fn()  # warm caches and lazy library loads
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return 1000 * statistics.median(times)


def ffmpeg_decode(path: Path) -> np.ndarray:
    raw = subprocess.run(
        [
            "ffmpeg",
            "-nostdin",
            "-v",
            "error",
            "-i",
            str(path),
            "-f",
            "f32le",
            "-ac",
            "1",
            "-ar",
            "16000",
            "-",
        ],
        check=True,
        capture_output=True,
    ).stdout
    return np.frombuffer(raw, np.float32)


def make_clip(directory: Path, seconds: float) -> Path:
    rng = np.random.default_rng(0)
    t = np.arange(int(seconds * 44_100)) / 44_100
    left = 0.3 * np.sin(2 * np.pi * 220 * t) * (1 + np.sin(2 * np.pi * 3 * t)) / 2
    right = 0.05 * rng.standard_normal(t.size)
    wav = directory / f"clip{seconds:g}.wav"
    pcm = (np.stack([left, right], 1) * 32767).astype("<i2")
    import wave

    with wave.open(str(wav), "wb") as out:
        out.setnchannels(2)
        out.setsampwidth(2)
        out.setframerate(44_100)
        out.writeframes(pcm.tobytes())
    mp3 = directory / f"clip{seconds:g}.mp3"
    subprocess.run(["ffmpeg", "-v", "error", "-i", str(wav), "-b:a", "128k", str(mp3)], check=True)
    return mp3


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeats", type=int, default=7)
    args = parser.parse_args()
    if shutil.which("ffmpeg") is None:
        raise SystemExit("the ffmpeg CLI is needed for the side-by-side figures")
    with tempfile.TemporaryDirectory() as tmp:
        print(f"decode to 16 kHz mono float32 (median of {args.repeats}, ms)")
        print(f"{'clip':>10} {'PyAV':>8} {'ffmpeg':>8} {'ratio':>6}")
        for seconds in (5.0, 60.0):
            clip = make_clip(Path(tmp), seconds)
            pyav = median_ms(lambda clip=clip: decode_audio(clip), args.repeats)
            spawn = median_ms(lambda clip=clip: ffmpeg_decode(clip), args.repeats)
            print(f"{seconds:>8g} s {pyav:8.1f} {spawn:8.1f} {spawn / pyav:5.1f}x")
        spawn_only = median_ms(
            lambda: subprocess.run(["ffmpeg", "-version"], check=True, capture_output=True), args.repeats
        )
        print(f"ffmpeg process spawn alone (ffmpeg -version): {spawn_only:.1f} ms")

    t = np.arange(5 * 24_000) / 24_000
    speech = (0.4 * np.sin(2 * np.pi * 180 * t) * np.sin(2 * np.pi * 2 * t)).astype(np.float32)
    chunks = [speech[i : i + 4800] for i in range(0, speech.size, 4800)]
    print(f"\nencode 5 s of 24 kHz mono (median of {args.repeats}, ms)")
    for fmt in SPEECH_FORMATS:
        cost = median_ms(lambda fmt=fmt: encode_speech(chunks, fmt), args.repeats)
        size = len(encode_speech(chunks, fmt))
        print(f"{fmt:>6} {cost:8.1f} ms {size:>9} bytes")


if __name__ == "__main__":
    main()
