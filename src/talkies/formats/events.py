"""OpenAI's server-sent events for streamed transcriptions and speech (pure functions).

Only `data:` lines, no `event:` lines and no `[DONE]`: older openai SDKs mis-parse named events, and
OpenAI's own examples send none. An error after the first byte is one more event,
`{"type": "error", "error": {...}}` (the same `error` object as an HTTP error body), which the SDKs raise
as `APIError`; the stream then ends.
"""

from __future__ import annotations

import base64
import json
import math
from typing import Any

from talkies.engines.base import Word

SSE_MEDIA_TYPE = "text/event-stream"


def sse(payload: dict[str, Any]) -> bytes:
    return b"data: " + json.dumps(payload, ensure_ascii=False).encode() + b"\n\n"


def logprobs_of(words: list[Word]) -> list[dict[str, Any]]:
    """OpenAI's logprobs entries from word probabilities (Whisper's alignment token probabilities)."""
    entries = []
    for word in words:
        probability = word.probability if word.probability is not None else 0.0
        logprob = math.log(probability) if probability > 0 else -1e9
        entries.append({"token": word.word, "logprob": round(logprob, 6), "bytes": list(word.word.encode())})
    return entries


def duration_usage(seconds: float) -> dict[str, Any]:
    return {"type": "duration", "seconds": math.ceil(seconds) if seconds > 0 else 0}


def transcript_delta(text: str, words: list[Word] | None = None, segment_id: str | None = None) -> bytes:
    payload: dict[str, Any] = {"type": "transcript.text.delta", "delta": text}
    if words is not None:
        payload["logprobs"] = logprobs_of(words)
    if segment_id is not None:
        payload["segment_id"] = segment_id
    return sse(payload)


def transcript_done(text: str, duration: float, words: list[Word] | None = None) -> bytes:
    payload: dict[str, Any] = {"type": "transcript.text.done", "text": text}
    if words is not None:
        payload["logprobs"] = logprobs_of(words)
    payload["usage"] = duration_usage(duration)
    return sse(payload)


def speech_delta(audio: bytes) -> bytes:
    return sse({"type": "speech.audio.delta", "audio": base64.b64encode(audio).decode("ascii")})


def speech_done(input_chars: int, audio_seconds: float) -> bytes:
    """`usage` is required by OpenAI's schema; talkies has no tokens, so input_tokens counts the input's
    characters and output_tokens the audio's 10 ms frames (both documented in docs/openai.md)."""
    output = max(0, round(audio_seconds * 100))
    return sse(
        {
            "type": "speech.audio.done",
            "usage": {
                "input_tokens": input_chars,
                "output_tokens": output,
                "total_tokens": input_chars + output,
            },
        }
    )


def error_event(error: dict[str, Any]) -> bytes:
    return sse({"type": "error", "error": error})
