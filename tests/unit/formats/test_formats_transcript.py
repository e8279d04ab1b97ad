from __future__ import annotations

import json

import pytest

from talkies.engines.base import Segment, TranscriptionResult, Word
from talkies.errors import UnsupportedFormatError
from talkies.formats.transcript import (
    TRANSCRIPT_FORMATS,
    normalize_transcript_format,
    render_transcript,
    srt_time,
    vtt_time,
)


@pytest.fixture
def result() -> TranscriptionResult:
    return TranscriptionResult(
        text=" the full transcript continuing here on the next segment",
        language="en",
        duration=6.42,
        segments=[
            Segment(
                0.0,
                2.31,
                " the full transcript",
                words=[
                    Word(" the", 0.0, 0.12),
                    Word(" full", 0.12, 0.34, probability=0.87654),
                    Word(" transcript", 0.34, 2.31),
                ],
                temperature=0.0,
            ),
            Segment(
                2.31,
                5.78,
                " continuing here on the next segment",
                avg_logprob=-0.25,
                compression_ratio=1.4,
                no_speech_prob=0.01,
            ),
        ],
    )


# --- times ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("seconds", "expected"),
    [
        (0.0, "00:00:00,000"),
        (2.31, "00:00:02,310"),
        (5.78, "00:00:05,780"),
        (59.9994, "00:00:59,999"),
        (59.9995, "00:01:00,000"),  # rounds up into the next minute, never "00:00:60,000"
        (59.99999, "00:01:00,000"),
        (3599.9996, "01:00:00,000"),
        (3661.001, "01:01:01,001"),
        (0.0005, "00:00:00,001"),  # half up
        (0.0004, "00:00:00,000"),
        (-0.3, "00:00:00,000"),
        (float("nan"), "00:00:00,000"),
        (360_000.0, "100:00:00,000"),
    ],
)
def test_srt_time(seconds: float, expected: str) -> None:
    assert srt_time(seconds) == expected
    assert vtt_time(seconds) == expected.replace(",", ".")


# --- format names ---------------------------------------------------------------------------------


def test_content_types() -> None:
    assert TRANSCRIPT_FORMATS == {
        "json": "application/json",
        "text": "text/plain",
        "verbose_json": "application/json",
        "srt": "application/x-subrip",
        "vtt": "text/vtt",
        "diarized_json": "application/json",
    }


def test_normalize_transcript_format() -> None:
    assert normalize_transcript_format(None) == "json"
    assert normalize_transcript_format("txt") == "text"
    assert normalize_transcript_format(" SRT ") == "srt"
    assert normalize_transcript_format("verbose_json") == "verbose_json"


@pytest.mark.parametrize("name", ["xml", "", "jsonl", "verbose-json"])
def test_unknown_format_is_an_error_listing_the_valid_ones(name: str) -> None:
    with pytest.raises(UnsupportedFormatError) as caught:
        normalize_transcript_format(name)
    assert caught.value.param == "response_format"
    for valid in ["json", "text", "verbose_json", "srt", "vtt", "txt"]:
        assert valid in caught.value.message


def test_render_rejects_unknown_formats(result: TranscriptionResult) -> None:
    with pytest.raises(UnsupportedFormatError):
        render_transcript(result, "docx")


# --- bodies --------------------------------------------------------------------------------------


def test_json(result: TranscriptionResult) -> None:
    body, content_type = render_transcript(result, "json")
    assert content_type == "application/json"
    assert json.loads(body) == {"text": " the full transcript continuing here on the next segment"}


def test_text(result: TranscriptionResult) -> None:
    body, content_type = render_transcript(result, "txt")
    assert content_type == "text/plain"
    assert body == "the full transcript continuing here on the next segment\n"


def test_verbose_json_shape(result: TranscriptionResult) -> None:
    body, content_type = render_transcript(result, "verbose_json", task="translate")
    assert content_type == "application/json"
    payload = json.loads(body)
    assert list(payload) == ["task", "language", "duration", "text", "segments", "words"]
    assert (payload["task"], payload["language"], payload["duration"]) == ("translate", "en", 6.42)
    assert payload["segments"][0] == {
        "id": 0,
        "seek": 0,
        "start": 0.0,
        "end": 2.31,
        "text": " the full transcript",
        "tokens": [],
        "temperature": 0.0,
        "avg_logprob": None,
        "compression_ratio": None,
        "no_speech_prob": None,
    }
    second = payload["segments"][1]
    assert (
        second["id"],
        second["avg_logprob"],
        second["compression_ratio"],
        second["no_speech_prob"],
        second["temperature"],
    ) == (1, -0.25, 1.4, 0.01, None)
    assert payload["words"] == [
        {"word": " the", "start": 0.0, "end": 0.12},
        {"word": " full", "start": 0.12, "end": 0.34, "probability": 0.8765},
        {"word": " transcript", "start": 0.34, "end": 2.31},
    ]


def test_verbose_json_rounds_float_noise_and_drops_nan() -> None:
    noisy = TranscriptionResult(
        text=" x",
        language=None,
        duration=0.1 + 0.2,
        segments=[Segment(0.1 + 0.2, 2.3100000000000005, " x", avg_logprob=float("nan"))],
    )
    payload = json.loads(render_transcript(noisy, "verbose_json")[0])
    assert payload["duration"] == 0.3
    assert (payload["segments"][0]["start"], payload["segments"][0]["end"]) == (0.3, 2.31)
    assert payload["segments"][0]["avg_logprob"] is None
    assert payload["language"] is None


def test_verbose_json_of_an_unaligned_result_keeps_empty_lists() -> None:
    plain = TranscriptionResult(text=" no timing here", language="en", duration=9.5, aligned=False)
    payload = json.loads(render_transcript(plain, "verbose_json")[0])
    assert payload["segments"] == []
    assert payload["words"] == []
    assert payload["text"] == " no timing here"


def test_srt(result: TranscriptionResult) -> None:
    body, content_type = render_transcript(result, "srt")
    assert content_type == "application/x-subrip"
    assert body == (
        "1\n00:00:00,000 --> 00:00:02,310\nthe full transcript\n\n"
        "2\n00:00:02,310 --> 00:00:05,780\ncontinuing here on the next segment\n"
    )


def test_vtt(result: TranscriptionResult) -> None:
    body, content_type = render_transcript(result, "vtt")
    assert content_type == "text/vtt"
    assert body == (
        "WEBVTT\n\n"
        "00:00:00.000 --> 00:00:02.310\nthe full transcript\n\n"
        "00:00:02.310 --> 00:00:05.780\ncontinuing here on the next segment\n"
    )


def test_diarized_cues_are_prefixed() -> None:
    diarized = TranscriptionResult(
        text="L: hi\nR: yo",
        language="en",
        duration=3.0,
        segments=[
            Segment(0.0, 1.42, " hi how's it going", channel="L"),
            Segment(1.5, 2.31, " not bad you", channel="R"),
        ],
    )
    srt = render_transcript(diarized, "srt")[0]
    assert "00:00:00,000 --> 00:00:01,420\nL: hi how's it going\n" in srt
    assert "2\n00:00:01,500 --> 00:00:02,310\nR: not bad you\n" in srt
    vtt = render_transcript(diarized, "vtt")[0]
    assert "00:00:01.500 --> 00:00:02.310\nR: not bad you\n" in vtt
    assert render_transcript(diarized, "text")[0] == "L: hi\nR: yo\n"


def test_unaligned_result_is_one_cue_over_the_whole_file() -> None:
    plain = TranscriptionResult(text=" all of it", language="en", duration=75.5, aligned=False)
    assert render_transcript(plain, "srt")[0] == "1\n00:00:00,000 --> 00:01:15,500\nall of it\n"
    assert render_transcript(plain, "vtt")[0] == "WEBVTT\n\n00:00:00.000 --> 00:01:15.500\nall of it\n"


def test_empty_segments_make_no_cues_and_blank_lines_never_end_a_cue() -> None:
    odd = TranscriptionResult(
        text=" a b",
        language="en",
        duration=4.0,
        segments=[Segment(0.0, 1.0, "  "), Segment(1.0, 2.0, " a\n\nb")],
    )
    assert render_transcript(odd, "srt")[0] == "1\n00:00:01,000 --> 00:00:02,000\na\nb\n"


def test_nothing_said_gives_empty_subtitles() -> None:
    silent = TranscriptionResult(text="", language=None, duration=3.0)
    assert render_transcript(silent, "srt")[0] == ""
    assert render_transcript(silent, "vtt")[0] == "WEBVTT\n"
    assert json.loads(render_transcript(silent, "json")[0]) == {"text": ""}
