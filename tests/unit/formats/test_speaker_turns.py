"""ASR words x diarizer turns -> diarized segments (talkies.formats.speaker_turns), and the known-speaker
assignment (talkies.services.diarization.match_known_speakers): pure, no engine."""

from __future__ import annotations

from talkies.engines.base import Segment, TranscriptionResult, Word
from talkies.engines.diarization.protocol import SpeakerTurn, exclusive_turns
from talkies.formats.diarized import diarized_body
from talkies.formats.speaker_turns import acoustic_segments, speaker_labels_by_appearance, speaker_of
from talkies.services.diarization import match_known_speakers

TURNS = [SpeakerTurn(0.0, 2.0, 7), SpeakerTurn(2.2, 4.0, 3), SpeakerTurn(4.2, 6.0, 7)]


def words(*items: tuple[str, float, float]) -> list[Word]:
    return [Word(word=text, start=start, end=end) for text, start, end in items]


def test_words_split_a_segment_at_speaker_changes() -> None:
    spoken = words(
        ("hello", 0.1, 0.5), ("there", 0.6, 1.9), ("hi", 2.1, 2.6), ("you", 2.7, 3.5), ("ok", 4.3, 4.8)
    )
    result = TranscriptionResult(
        text="hello there hi you ok",
        language="en",
        duration=6.0,
        segments=[Segment(0.1, 4.8, "hello there hi you ok", spoken)],
    )
    segments = acoustic_segments(result, TURNS, {})
    assert [(s.id, s.speaker, s.text, s.start, s.end) for s in segments] == [
        ("seg_001", "A", "hello there", 0.1, 1.9),
        ("seg_002", "B", "hi you", 2.1, 3.5),
        ("seg_003", "A", "ok", 4.3, 4.8),
    ]
    assert diarized_body(segments, 6.0)["text"] == "A: hello there\nB: hi you\nA: ok"


def test_whisper_style_words_keep_their_spaces() -> None:
    spoken = words((" Hello", 0.1, 0.5), (" world.", 0.6, 1.0))
    result = TranscriptionResult(
        text="Hello world.",
        language="en",
        duration=2.0,
        segments=[Segment(0.1, 1.0, " Hello world.", spoken)],
    )
    assert [s.text for s in acoustic_segments(result, TURNS, {})] == ["Hello world."]


def test_segments_without_words_go_whole_by_overlap() -> None:
    result = TranscriptionResult(
        text="a b", language="en", duration=6.0, segments=[Segment(0.0, 2.1, "a"), Segment(2.0, 4.1, "b")]
    )
    assert [s.speaker for s in acoustic_segments(result, TURNS, {})] == ["A", "B"]


def test_an_engine_without_timestamps_goes_to_the_main_speaker() -> None:
    result = TranscriptionResult(text="all of it", language="en", duration=6.0, segments=[], aligned=False)
    assert [(s.speaker, s.text, s.end) for s in acoustic_segments(result, TURNS, {})] == [
        ("A", "all of it", 6.0)
    ]


def test_names_win_and_letters_skip_them() -> None:
    assert speaker_labels_by_appearance([3, 7, 9], {7: "agent"}) == {3: "A", 7: "agent", 9: "B"}
    assert speaker_labels_by_appearance([5, 1], {1: "A"}) == {5: "B", 1: "A"}


def test_a_word_in_a_gap_goes_to_the_nearest_turn() -> None:
    assert speaker_of(2.1, 2.2, TURNS) == 3
    assert speaker_of(1.0, 3.0, TURNS) == 7  # 1.0 s of 7 against 0.8 s of 3


def test_exclusive_turns_remove_overlaps() -> None:
    turns = [SpeakerTurn(0.0, 3.0, 0), SpeakerTurn(2.0, 5.0, 1), SpeakerTurn(2.5, 2.9, 2)]
    assert exclusive_turns(turns) == [SpeakerTurn(0.0, 3.0, 0), SpeakerTurn(3.0, 5.0, 1)]


def test_known_speakers_take_the_optimal_one_to_one_assignment() -> None:
    speakers = {0: [1.0, 0.0, 0.0], 1: [0.8, 0.6, 0.0], 2: [0.0, 0.0, 1.0]}
    # greedy would give "a" to speaker 0 (1.0) and leave "b" with 1 (0.6); the optimum is a->1, b->0
    references = [[0.9, 0.43, 0.0], [1.0, 0.05, 0.0]]
    assert match_known_speakers(speakers, references, ("a", "b"), 0.5) == {1: "a", 0: "b"}


def test_known_speakers_under_the_threshold_keep_letters() -> None:
    speakers = {0: [1.0, 0.0], 1: [0.0, 1.0]}
    assert match_known_speakers(speakers, [[0.7, 0.7]], ("far",), 0.8) == {}
    assert match_known_speakers(speakers, [[0.7, 0.7]], ("near",), 0.7) in ({0: "near"}, {1: "near"})
    assert match_known_speakers({}, [[1.0, 0.0]], ("x",), 0.5) == {}
