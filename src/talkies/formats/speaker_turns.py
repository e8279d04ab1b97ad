"""A transcript and a diarizer's speaker turns -> `diarized_json` segments (pure).

Each ASR word goes to the speaker whose turn covers most of it (a word no turn touches: the nearest turn);
a segment is split wherever the speaker changes between two of its words. An engine without word times
has its segments assigned whole, by overlap; an engine without timestamps gives one segment for the file,
assigned to the speaker who talks most. Speakers are named `A`, `B`, ... in order of first appearance in
the transcript, except those a known-speaker reference matched, which take its name (letters skip the
names, so `A` may follow `agent`). Segment ids are `seg_001`, `seg_002`, ... in time order, the same in the
streamed events and the JSON answer.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from talkies.engines.base import Segment, TranscriptionResult, Word
from talkies.engines.diarization.protocol import SpeakerTurn
from talkies.formats.diarized import LETTERS, SpeakerSegment
from talkies.formats.transcript import json_seconds


@dataclass(frozen=True, slots=True)
class _Piece:
    start: float
    end: float
    text: str
    speaker: int


def speaker_of(start: float, end: float, turns: Sequence[SpeakerTurn]) -> int:
    """The speaker whose turns cover most of [start, end]; with no overlap, the nearest turn's speaker."""
    if not turns:
        return 0
    cover: dict[int, float] = {}
    for turn in turns:
        overlap = min(end, turn.end) - max(start, turn.start)
        if overlap > 0:
            cover[turn.speaker] = cover.get(turn.speaker, 0.0) + overlap
    if cover:
        return max(cover, key=lambda speaker: cover[speaker])
    middle = (start + end) / 2
    nearest = min(turns, key=lambda turn: min(abs(middle - turn.start), abs(middle - turn.end)))
    return nearest.speaker


def _join(words: Sequence[Word]) -> str:
    if any(word.word[:1].isspace() for word in words):  # whisper-style words carry their own spaces
        return "".join(word.word for word in words).strip()
    return " ".join(word.word.strip() for word in words if word.word.strip())


def _pieces(segment: Segment, turns: Sequence[SpeakerTurn]) -> list[_Piece]:
    words = [word for word in segment.words if word.word.strip()]
    if not words:
        speaker = speaker_of(segment.start, segment.end, turns)
        return [_Piece(segment.start, segment.end, segment.text.strip(), speaker)]
    pieces: list[_Piece] = []
    run: list[Word] = []
    run_speaker = -1
    for word in words:
        speaker = speaker_of(word.start, word.end, turns)
        if run and speaker != run_speaker:
            pieces.append(_Piece(run[0].start, run[-1].end, _join(run), run_speaker))
            run = []
        run.append(word)
        run_speaker = speaker
    pieces.append(_Piece(run[0].start, run[-1].end, _join(run), run_speaker))
    return pieces


def _talk_time(turns: Sequence[SpeakerTurn]) -> dict[int, float]:
    totals: dict[int, float] = {}
    for turn in turns:
        totals[turn.speaker] = totals.get(turn.speaker, 0.0) + turn.end - turn.start
    return totals


def speaker_pieces(result: TranscriptionResult, turns: Sequence[SpeakerTurn]) -> list[_Piece]:
    if not result.aligned:
        text = result.text.strip()
        totals = _talk_time(turns)
        speaker = max(totals, key=lambda s: totals[s]) if totals else 0
        return [_Piece(0.0, result.duration, text, speaker)] if text else []
    return [piece for segment in result.segments for piece in _pieces(segment, turns) if piece.text]


def speaker_labels_by_appearance(order: Sequence[int], names: Mapping[int, str]) -> dict[int, str]:
    """Letters by first appearance in `order`, skipping letters a name already uses; `names` win."""
    labels: dict[int, str] = {}
    letters = (letter for letter in LETTERS if letter not in names.values())
    for speaker in order:
        if speaker not in labels:
            labels[speaker] = names.get(speaker) or next(letters, f"S{speaker}")
    return labels


def acoustic_segments(
    result: TranscriptionResult, turns: Sequence[SpeakerTurn], names: Mapping[int, str]
) -> list[SpeakerSegment]:
    """`result` split and labelled by `turns`; `names`: diarizer speaker -> known-speaker name."""
    pieces = speaker_pieces(result, turns)
    labels = speaker_labels_by_appearance([piece.speaker for piece in pieces], names)
    segments = []
    for index, piece in enumerate(pieces, start=1):
        start = json_seconds(piece.start)
        end = max(json_seconds(piece.end), start)
        segments.append(SpeakerSegment(f"seg_{index:03d}", start, end, piece.text, labels[piece.speaker]))
    return segments
