"""Checks run from outside a running talkies container (called by scripts/image-test.sh).

    python scripts/image_check.py http://127.0.0.1:PORT

/v1/models lists exactly the CPU registry; espeak-ng speaks a sentence; pocketsphinx transcribes that
speech back; a staged file lands in /data (the caller then checks its owner on the volume).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import httpx

SENTENCE = "The weather is nice today."
REPO = Path(__file__).resolve().parent.parent


def fail(message: str) -> None:
    print(f"image-check: FAILED: {message}", file=sys.stderr)
    sys.exit(1)


def main(base: str) -> None:
    with httpx.Client(base_url=base, timeout=300) as client:
        listed = [m["id"] for m in client.get("/v1/models").raise_for_status().json()["data"]]
        expected = list(json.loads((REPO / "models-cpu.json").read_text())["models"])
        if sorted(listed) != sorted(expected):
            fail(f"/v1/models lists {listed}, the CPU registry has {expected}")
        print(f"image-check: /v1/models lists the {len(listed)} models of models-cpu.json")

        speech = client.post(
            "/v1/audio/speech",
            json={"model": "espeak-ng", "voice": "en-us+klatt", "input": SENTENCE, "response_format": "wav"},
        )
        if speech.status_code != 200 or speech.content[:4] != b"RIFF" or len(speech.content) < 24_000:
            fail(f"speech answered {speech.status_code} with {len(speech.content)} bytes")
        print(f"image-check: speech: {len(speech.content)} bytes of WAV")

        text = client.post(
            "/v1/audio/transcriptions",
            data={"model": "pocketsphinx-en-us"},
            files={"file": ("speech.wav", speech.content, "audio/wav")},
        )
        if text.status_code != 200:
            fail(f"transcription answered {text.status_code}: {text.text}")
        heard = text.json()["text"].lower()
        words = [w.strip(".").lower() for w in SENTENCE.split()]
        found = sum(w in heard.split() for w in words)
        if found < len(words) * 0.6:
            fail(f"transcription heard {heard!r} for {SENTENCE!r}")
        print(f"image-check: transcription: {heard!r}")

        staged = client.put("/v1/files/image-check/hello.txt", content=b"hello")
        if staged.status_code != 201:
            fail(f"PUT /v1/files answered {staged.status_code}: {staged.text}")
        print("image-check: staged a file under /data")


if __name__ == "__main__":
    main(sys.argv[1])
