from __future__ import annotations

import copy
import json

import pytest

from talkies.engines.base import Region, Segment, TranscriptionResult, Word
from talkies.formats.timeline import join_texts, merge_stereo, stitch
from talkies.formats.transcript import render_transcript


def chunk(text: str, segments: list[Segment], language: str | None = "en") -> TranscriptionResult:
    return TranscriptionResult(text=text, language=language, duration=28.0, segments=segments)


def seg(start: float, end: float, text: str, words: list[Word] | None = None) -> Segment:
    return Segment(start=start, end=end, text=text, words=words or [])


# --- stitch --------------------------------------------------------------------------------------


def test_stitch_offsets_segments_and_words_by_the_chunk_start() -> None:
    first = chunk(
        " hello there", [seg(0.5, 2.0, " hello there", [Word(" hello", 0.5, 1.0), Word(" there", 1.1, 2.0)])]
    )
    second = chunk(
        " general kenobi", [seg(0.25, 1.5, " general kenobi", [Word(" general", 0.25, 0.8, probability=0.9)])]
    )
    result = stitch([(Region(10.0, 20.0), first), (Region(40.0, 50.0), second)], duration=60.0)
    assert result.aligned
    assert result.duration == 60.0
    assert [(s.start, s.end) for s in result.segments] == [(10.5, 12.0), (40.25, 41.5)]
    assert [(w.word, w.start, w.end) for s in result.segments for w in s.words] == [
        (" hello", 10.5, 11.0),
        (" there", 11.1, 12.0),
        (" general", 40.25, 40.8),
    ]
    assert result.segments[1].words[0].probability == 0.9
    assert result.text == " hello there general kenobi"


def test_stitch_does_not_modify_the_chunks() -> None:
    part = chunk(" a", [seg(1.0, 2.0, " a", [Word(" a", 1.0, 2.0)])])
    before = copy.deepcopy(part)
    stitch([(Region(5.0, 9.0), part)], duration=10.0)
    assert part == before


def test_stitch_takes_the_first_known_language() -> None:
    parts = [
        (Region(0, 1), chunk("", [], language=None)),
        (Region(2, 3), chunk(" b", [], language="de")),
        (Region(4, 5), chunk(" c", [], language="fr")),
    ]
    assert stitch(parts, 6.0).language == "de"


def test_stitch_clamps_timestamps_to_the_file() -> None:
    part = chunk(" end", [seg(1.0, 3.5, " end", [Word(" end", 1.0, 3.5)])])
    [segment] = stitch([(Region(8.0, 10.0), part)], duration=10.0).segments
    assert (segment.start, segment.end) == (9.0, 10.0)
    assert segment.words[0].end == 10.0


def test_stitch_of_unaligned_chunks_joins_texts_with_one_space() -> None:
    parts = [
        (
            Region(0.0, 20.0),
            TranscriptionResult(text="first part. ", language="en", duration=20.0, aligned=False),
        ),
        (Region(25.0, 45.0), TranscriptionResult(text="  ", language=None, duration=20.0, aligned=False)),
        (
            Region(50.0, 70.0),
            TranscriptionResult(text=" second part.", language=None, duration=20.0, aligned=False),
        ),
    ]
    result = stitch(parts, duration=80.0)
    assert not result.aligned
    assert result.segments == []
    assert result.text == "first part. second part."
    assert result.language == "en"


def test_one_unaligned_chunk_makes_the_whole_result_unaligned() -> None:
    aligned = chunk(" a", [seg(0.0, 1.0, " a")])
    plain = TranscriptionResult(text="b", language=None, duration=5.0, aligned=False)
    result = stitch([(Region(0, 5), aligned), (Region(5, 10), plain)], 10.0)
    assert not result.aligned
    assert result.segments == []
    assert result.text == " a b"


def test_stitch_of_nothing() -> None:
    result = stitch([], duration=42.0)
    assert (result.text, result.segments, result.aligned, result.duration) == ("", [], True, 42.0)


def test_join_texts() -> None:
    assert join_texts([" a", " b "]) == " a b"
    assert join_texts(["a", "", "b"]) == "a b"
    assert join_texts(["", " "]) == ""


# --- stereo --------------------------------------------------------------------------------------


@pytest.fixture
def conversation() -> tuple[TranscriptionResult, TranscriptionResult]:
    left = TranscriptionResult(
        text=" hi how's it going cool man",
        language="en",
        duration=6.0,
        segments=[
            seg(0.0, 0.6, " hi", [Word(" hi", 0.0, 0.6)]),
            seg(
                0.7,
                1.42,
                " how's it going",
                [Word(" how's", 0.7, 1.0), Word(" it", 1.0, 1.1), Word(" going", 1.1, 1.42)],
            ),
            seg(3.0, 3.8, " cool man", [Word(" cool", 3.0, 3.4), Word(" man", 3.4, 3.8)]),
        ],
    )
    right = TranscriptionResult(
        text=" not bad you",
        language=None,
        duration=6.2,
        segments=[
            seg(
                1.5,
                2.31,
                " not bad you",
                [Word(" not", 1.5, 1.7), Word(" bad", 1.7, 2.0), Word(" you", 2.0, 2.31)],
            ),
        ],
    )
    return left, right


def test_merge_tags_and_orders_segments_and_words(
    conversation: tuple[TranscriptionResult, TranscriptionResult],
) -> None:
    merged = merge_stereo(*conversation)
    assert [(s.channel, s.start) for s in merged.segments] == [("L", 0.0), ("L", 0.7), ("R", 1.5), ("L", 3.0)]
    assert all(w.channel == s.channel for s in merged.segments for w in s.words)
    assert merged.language == "en"
    assert merged.duration == 6.2
    assert merged.aligned


def test_merge_collapses_turns_into_lines(
    conversation: tuple[TranscriptionResult, TranscriptionResult],
) -> None:
    assert merge_stereo(*conversation).text == "L: hi how's it going\nR: not bad you\nL: cool man"


def test_merge_does_not_modify_its_inputs(
    conversation: tuple[TranscriptionResult, TranscriptionResult],
) -> None:
    before = copy.deepcopy(conversation)
    merge_stereo(*conversation)
    assert conversation == before
    assert conversation[0].segments[0].channel is None


def test_merged_ids_are_renumbered_contiguously(
    conversation: tuple[TranscriptionResult, TranscriptionResult],
) -> None:
    body, _ = render_transcript(merge_stereo(*conversation), "verbose_json")
    payload = json.loads(body)
    assert [s["id"] for s in payload["segments"]] == [0, 1, 2, 3]
    assert [s["channel"] for s in payload["segments"]] == ["L", "L", "R", "L"]
    assert [w["channel"] for w in payload["words"]] == ["L"] * 4 + ["R"] * 3 + ["L"] * 2
    assert payload["text"].splitlines()[1] == "R: not bad you"


def test_merge_puts_left_first_on_equal_starts() -> None:
    left = chunk(" a", [seg(1.0, 2.0, " a")])
    right = chunk(" b", [seg(1.0, 1.5, " b")])
    merged = merge_stereo(left, right)
    assert [s.channel for s in merged.segments] == ["L", "R"]
    assert merged.text == "L: a\nR: b"


def test_merge_with_a_silent_channel() -> None:
    left = chunk(" only me", [seg(0.0, 1.0, " only me")])
    right = TranscriptionResult(text="", language=None, duration=28.0)
    assert merge_stereo(left, right).text == "L: only me"


def test_merge_of_unaligned_channels_gives_one_line_per_channel() -> None:
    left = TranscriptionResult(text=" left words", language="en", duration=5.0, aligned=False)
    right = TranscriptionResult(text="right words ", language=None, duration=5.0, aligned=False)
    merged = merge_stereo(left, right)
    assert not merged.aligned
    assert merged.segments == []
    assert merged.text == "L: left words\nR: right words"
