"""What the `real` tier's modules share: model names, requests, word error rate."""

from __future__ import annotations

import re
from typing import Any

import httpx

WHISPER = "whisper-base"
KOKORO = "kokoro-82m-int8"
ESPEAK = "espeak-ng"
VOICE = "jm_kumo"  # the snapshot's male voice
OTHER_VOICE = "jf_alpha"  # and a female one

_NUMBERS = {"1": "one", "2": "two", "3": "three", "4": "four", "5": "five", "6": "six", "7": "seven",
            "8": "eight", "9": "nine", "10": "ten"}  # fmt: skip


def words(text: str) -> list[str]:
    """Lower case, no punctuation, small numerals spelled out: what WER compares."""
    tokens = re.sub(r"[^\w\s']", " ", text.lower().replace("-", " ")).split()
    return [_NUMBERS.get(t, t) for t in tokens]


def wer(reference: str, hypothesis: str) -> float:
    """Word error rate: word-level edit distance over the reference's length."""
    ref, hyp = words(reference), words(hypothesis)
    row = list(range(len(hyp) + 1))
    for i, r in enumerate(ref, 1):
        previous, row[0] = row[0], i
        for j, h in enumerate(hyp, 1):
            previous, row[j] = row[j], min(row[j] + 1, row[j - 1] + 1, previous + (r != h))
    return row[len(hyp)] / max(1, len(ref))


def transcribe(client: httpx.Client, audio: bytes, name: str, **fields: Any) -> httpx.Response:
    data = {"model": WHISPER, "temperature": "0", **fields}
    answer = client.post("/v1/audio/transcriptions", data=data, files={"file": (name, audio)})
    assert answer.status_code == 200, answer.text
    return answer
