"""A `TranscriptionResult` -> the `response_format` wire shapes (pure functions; `diarized_json` of
several channels is `talkies.formats.diarized`).

Times in srt / vtt are formatted from integer milliseconds, so 59.9996 s is `00:01:00,000`, never
`00:00:60,000`. JSON times are rounded to the millisecond.
"""

from __future__ import annotations

import json
import math
from typing import Any, Final

from talkies.engines.base import Segment, TranscriptionResult
from talkies.errors import UnsupportedFormatError

TRANSCRIPT_FORMATS: Final[dict[str, str]] = {
    "json": "application/json",
    "text": "text/plain",
    "verbose_json": "application/json",
    "srt": "application/x-subrip",
    "vtt": "text/vtt",
    "diarized_json": "application/json",
}
"""response_format -> Content-Type."""

_ALIASES: Final = {"txt": "text"}


def normalize_transcript_format(name: str | None) -> str:
    """None -> json; `txt` -> text; anything unknown -> UnsupportedFormatError (never silently json)."""
    if name is None:
        return "json"
    key = name.strip().lower()
    key = _ALIASES.get(key, key)
    if key not in TRANSCRIPT_FORMATS:
        valid = ", ".join([*TRANSCRIPT_FORMATS, *_ALIASES])
        raise UnsupportedFormatError(
            f"unsupported response_format {name!r}; expected one of: {valid}", param="response_format"
        )
    return key


def render_transcript(
    result: TranscriptionResult, fmt: str, *, task: str = "transcribe", logprobs: bool = False
) -> tuple[str, str]:
    """(body, content type) for `fmt` (a name `normalize_transcript_format` accepts). `logprobs`: json
    carries OpenAI's `logprobs` list (include[]=logprobs)."""
    fmt = normalize_transcript_format(fmt)
    if fmt == "json":
        payload: dict[str, Any] = {"text": result.text}
        if logprobs:
            from talkies.formats.events import logprobs_of

            payload["logprobs"] = logprobs_of([w for s in result.segments for w in s.words])
        body = _dumps(payload)
    elif fmt == "text":
        body = result.text.strip() + "\n"
    elif fmt == "verbose_json":
        body = _dumps(verbose_json(result, task=task))
    elif fmt == "diarized_json":
        from talkies.formats.diarized import diarized_json

        body = _dumps(diarized_json([result], ["A"]))  # one channel: one speaker
    elif fmt == "srt":
        body = render_srt(result)
    else:
        body = render_vtt(result)
    return body, TRANSCRIPT_FORMATS[fmt]


def verbose_json(result: TranscriptionResult, *, task: str = "transcribe") -> dict[str, Any]:
    """The contract's Whisper shape; `segments` and `words` are always present (empty when unaligned)."""
    segments = result.segments if result.aligned else []
    words: list[dict[str, Any]] = []
    for segment in segments:
        for word in segment.words:
            entry: dict[str, Any] = {
                "word": word.word,
                "start": json_seconds(word.start),
                "end": json_seconds(word.end),
            }
            if word.probability is not None:
                entry["probability"] = _finite(round(word.probability, 4))
            if word.channel is not None:
                entry["channel"] = word.channel
            words.append(entry)
    return {
        "task": task,
        "language": result.language,
        "duration": json_seconds(result.duration),
        "text": result.text,
        "segments": [_segment_json(index, segment) for index, segment in enumerate(segments)],
        "words": words,
    }


def render_srt(result: TranscriptionResult) -> str:
    blocks = [
        f"{index}\n{srt_time(start)} --> {srt_time(end)}\n{text}\n"
        for index, (start, end, text) in enumerate(_cues(result), start=1)
    ]
    return "\n".join(blocks)


def render_vtt(result: TranscriptionResult) -> str:
    blocks = [f"{vtt_time(start)} --> {vtt_time(end)}\n{text}\n" for start, end, text in _cues(result)]
    return "\n".join(["WEBVTT\n", *blocks])


def srt_time(seconds: float) -> str:
    """`HH:MM:SS,mmm` from integer milliseconds (hours keep growing past 99)."""
    return _clock(seconds, ",")


def vtt_time(seconds: float) -> str:
    """`HH:MM:SS.mmm` from integer milliseconds."""
    return _clock(seconds, ".")


def _clock(seconds: float, separator: str) -> str:
    millis = _millis(seconds)
    hours, millis = divmod(millis, 3_600_000)
    minutes, millis = divmod(millis, 60_000)
    secs, millis = divmod(millis, 1000)
    return f"{hours:02d}:{minutes:02d}:{secs:02d}{separator}{millis:03d}"


def _millis(seconds: float) -> int:
    if not math.isfinite(seconds) or seconds <= 0:
        return 0
    return math.floor(seconds * 1000 + 0.5)  # half up, not banker's rounding


def json_seconds(seconds: float) -> float:
    """Seconds rounded to the millisecond (half up), as every JSON time is written."""
    return _millis(seconds) / 1000


def _cues(result: TranscriptionResult) -> list[tuple[float, float, str]]:
    """One cue per segment with text; an unaligned result is one cue spanning [0, duration]."""
    cues = [
        (segment.start, max(segment.end, segment.start), _cue_text(segment))
        for segment in (result.segments if result.aligned else [])
        if segment.text.strip()
    ]
    if not cues and result.text.strip():
        cues = [(0.0, result.duration, _clean_lines(result.text))]
    return cues


def _cue_text(segment: Segment) -> str:
    text = _clean_lines(segment.text)
    return f"{segment.channel}: {text}" if segment.channel else text


def _clean_lines(text: str) -> str:
    # A blank line ends an srt / vtt cue early, so lines inside one cue are kept non-empty.
    return "\n".join(line.strip() for line in text.splitlines() if line.strip())


def _segment_json(index: int, segment: Segment) -> dict[str, Any]:
    entry: dict[str, Any] = {
        "id": index,
        "seek": 0,
        "start": json_seconds(segment.start),
        "end": json_seconds(segment.end),
        "text": segment.text,
        "tokens": [],
        "temperature": _finite(segment.temperature),
        "avg_logprob": _finite(segment.avg_logprob),
        "compression_ratio": _finite(segment.compression_ratio),
        "no_speech_prob": _finite(segment.no_speech_prob),
    }
    if segment.channel is not None:
        entry["channel"] = segment.channel
    return entry


def _finite(value: float | None) -> float | None:
    """JSON has no NaN / Infinity: an engine's non-finite score is reported as unknown."""
    return value if value is not None and math.isfinite(value) else None


def _dumps(payload: dict[str, Any]) -> str:
    return json.dumps(payload, ensure_ascii=False)
