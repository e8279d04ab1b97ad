"""Audio files for the speech-endpoint tests, spoken by the real espeak-ng (no recordings shipped)."""

from __future__ import annotations

import subprocess
import wave
from pathlib import Path

import numpy as np

from talkies.audio.encode import resample, to_int16
from talkies.engines.espeak import parse_wav
from talkies.settings import Settings, load_settings

RATE = 16_000
# espeak-ng's klatt variant is the voice pocketsphinx's bundled model understands best.
VOICE = "en-us+klatt"
SENTENCE_A = "The weather is nice today."
SENTENCE_B = "Please call me tomorrow morning."


def speak(text: str) -> np.ndarray:
    wav = subprocess.run(
        ["espeak-ng", "--stdout", "-v", VOICE], input=text.encode(), capture_output=True, check=True
    ).stdout
    pcm, rate = parse_wav(wav)
    return resample(pcm, rate, RATE)


def silence(seconds: float) -> np.ndarray:
    return np.zeros(int(seconds * RATE), dtype=np.float32)


def write_wav(path: Path, channels: list[np.ndarray]) -> Path:
    length = max(len(c) for c in channels)
    padded = [np.pad(c, (0, length - len(c))) for c in channels]
    frames = to_int16(np.stack(padded, axis=1).reshape(-1))
    with wave.open(str(path), "wb") as out:
        out.setnchannels(len(channels))
        out.setsampwidth(2)
        out.setframerate(RATE)
        out.writeframes(frames.tobytes())
    return path


def word_overlap(expected: str, got: str) -> float:
    """Share of the expected words found in `got` (case and punctuation ignored)."""
    want = [w.strip(".,!?:").lower() for w in expected.split()]
    have = {w.strip(".,!?:").lower() for w in got.replace("\n", " ").split()}
    return sum(w in have for w in want) / len(want)


def weightfree_registry(path: Path) -> Path:
    """The two weight-free models under their shipped slugs."""
    import json

    path.write_text(
        json.dumps(
            {
                "models": {
                    "pocketsphinx-en-us": {"executor": "pocketsphinx"},
                    "espeak-ng": {"executor": "espeak", "default_voice": VOICE},
                }
            }
        )
    )
    return path


def weightfree_settings(tmp: Path, **overrides: object) -> Settings:
    overrides.setdefault("models_file", weightfree_registry(tmp / "models.json"))
    overrides.setdefault("data_dir", tmp / "data")
    overrides.setdefault("sweeper_interval", 0)
    overrides.setdefault("engine_isolation", "inprocess")
    overrides.setdefault("device", "cpu")
    return load_settings(**overrides)
