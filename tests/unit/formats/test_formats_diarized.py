"""`diarized_json` from per-channel results (pure): labels, ids, merge order, turn lines, no timestamps."""

from __future__ import annotations

import json

from talkies.engines.base import Segment, TranscriptionResult
from talkies.formats.diarized import ChannelSegments, diarized_json, segment_json, speaker_labels
from talkies.formats.transcript import render_transcript


def result(*segments: tuple[float, float, str], duration: float = 10.0) -> TranscriptionResult:
    parts = [Segment(start, end, text) for start, end, text in segments]
    return TranscriptionResult(
        text="".join(s.text for s in parts), language="en", duration=duration, segments=parts
    )


def test_speaker_labels_are_names_in_channel_order_then_letters() -> None:
    assert speaker_labels(1) == ["A"]
    assert speaker_labels(2) == ["A", "B"]
    assert speaker_labels(2, ["agent"]) == ["agent", "B"]
    assert speaker_labels(2, ["agent", "customer"]) == ["agent", "customer"]


def test_segments_merge_by_start_with_channel_ids_and_turn_lines() -> None:
    left = result((0.0, 1.0, " Hello."), (1.2, 2.0, " How are you?"), (5.0, 6.0, " Bye."))
    right = result((2.5, 4.0, " Fine, thanks."), (6.5, 7.0, "   "), duration=9.0)
    body = diarized_json([left, right], ["agent", "B"])
    assert body["task"] == "transcribe"
    assert body["duration"] == 10.0
    assert body["usage"] == {"type": "duration", "seconds": 10}
    assert [(s["id"], s["speaker"], s["text"]) for s in body["segments"]] == [
        ("seg_A_001", "agent", "Hello."),
        ("seg_A_002", "agent", "How are you?"),
        ("seg_B_001", "B", "Fine, thanks."),  # the blank segment is dropped
        ("seg_A_003", "agent", "Bye."),
    ]
    assert body["text"] == "agent: Hello. How are you?\nB: Fine, thanks.\nagent: Bye."
    assert all(s["type"] == "transcript.text.segment" for s in body["segments"])
    assert set(body["segments"][0]) == {"type", "id", "start", "end", "text", "speaker"}


def test_equal_starts_put_the_earlier_channel_first() -> None:
    body = diarized_json([result((1.0, 2.0, "left")), result((1.0, 2.0, "right"))], ["A", "B"])
    assert [s["speaker"] for s in body["segments"]] == ["A", "B"]


def test_times_are_milliseconds_and_never_run_backwards() -> None:
    body = diarized_json([result((0.12345, 0.1, "x"))], ["A"])
    (segment,) = body["segments"]
    assert (segment["start"], segment["end"]) == (0.123, 0.123)


def test_unaligned_engine_gives_one_segment_spanning_the_channel() -> None:
    unaligned = TranscriptionResult(text=" whole thing ", language=None, duration=4.2, aligned=False)
    silent = TranscriptionResult(text="", language=None, duration=4.2, aligned=False)
    body = diarized_json([unaligned, silent], ["A", "B"])
    assert [(s["id"], s["start"], s["end"], s["text"]) for s in body["segments"]] == [
        ("seg_A_001", 0.0, 4.2, "whole thing")
    ]
    assert body["text"] == "A: whole thing"


def test_streamed_numbering_matches_the_finished_answer() -> None:
    channel = result((0.0, 1.0, " one"), (1.0, 1.5, ""), (2.0, 3.0, " two"))
    numbering = ChannelSegments(1, "customer")
    streamed = [numbering.take(s) for s in channel.segments]
    taken = [s for s in streamed if s is not None] + numbering.finish(channel)
    streamed_json = [segment_json(s) for s in taken]
    body = diarized_json([result(), channel], ["agent", "customer"])
    assert streamed_json == body["segments"]


def test_render_transcript_reads_one_result_as_speaker_a() -> None:
    body, content_type = render_transcript(result((0.0, 1.0, " hi")), "diarized_json")
    assert content_type == "application/json"
    assert json.loads(body)["text"] == "A: hi"
