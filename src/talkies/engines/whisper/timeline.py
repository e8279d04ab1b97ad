"""Timelines for the whisper engine (pure): VAD regions -> 30 s clips, and model timestamps cleaned up.

Whisper's encoder always sees a 30 s window, so `clip_timestamps` packs neighbouring speech regions into
clips of at most 30 s. Whisper predicts timestamps as tokens, and a confused model (or random weights)
emits them past the end of a clip or out of order: `clamp_segment` and `normalize_timeline` keep every
segment inside its clip and the file, in order, and every word inside its segment.
"""

from __future__ import annotations

from talkies.engines.base import ASR_SAMPLE_RATE, Region, Segment

MAX_CLIP_SECONDS = 30.0  # Whisper's window: a longer clip would be cut at 30 s by the batched pipeline
MIN_CLIP_SECONDS = 0.02  # one timestamp token; shorter regions hold nothing to decode
FRAMES_PER_SECOND = 100  # mel frames (hop 160 at 16 kHz): the unit of faster-whisper's `seek`
DEFAULT_REGION_GAP = 3.0


def clip_timestamps(
    regions: tuple[Region, ...], duration: float, max_gap: float = DEFAULT_REGION_GAP
) -> list[dict[str, float]]:
    """VAD regions -> faster-whisper clip timestamps: inside the audio, each at most 30 s long.

    Consecutive regions separated by at most `max_gap` seconds are packed into one clip while it stays
    within 30 s; a region longer than 30 s is cut into 30 s pieces.
    """
    pieces: list[tuple[float, float]] = []
    for region in sorted(regions, key=lambda r: r.start):
        start, end = max(0.0, region.start), min(duration, region.end)
        while end - start >= MIN_CLIP_SECONDS:
            piece_end = min(end, start + MAX_CLIP_SECONDS)
            pieces.append((start, piece_end))
            start = piece_end
    clips: list[dict[str, float]] = []
    for start, end in pieces:
        last = clips[-1] if clips else None
        if last is not None and start - last["end"] <= max_gap and end - last["start"] <= MAX_CLIP_SECONDS:
            last["end"] = max(last["end"], end)
        else:
            clips.append({"start": start, "end": end})
    return clips


def normalize_timeline(segments: list[Segment], duration: float) -> list[Segment]:
    """Clamp model timestamps into a monotonic timeline inside [0, duration].

    Whisper predicts timestamps as tokens; a confused model (or random weights) can emit them past the
    end of the audio or out of order. Segments are ordered by start and never overlap; words stay
    inside their segment and in order.
    """
    ordered = sorted(segments, key=lambda s: (s.start, s.end))
    previous_end = 0.0
    for seg in ordered:
        previous_end = clamp_next(seg, previous_end, duration)
    return ordered


def clamp_next(seg: Segment, previous_end: float, duration: float) -> float:
    """Clamp one segment (in place) after one that ended at `previous_end`: the streaming form of
    `normalize_timeline` (segments come in decoding order). Returns the segment's end."""
    seg.start = min(max(seg.start, previous_end), duration)
    seg.end = min(max(seg.end, seg.start), duration)
    word_floor = seg.start
    for word in seg.words:
        word.start = min(max(word.start, word_floor), seg.end)
        word.end = min(max(word.end, word.start), seg.end)
        word_floor = word.end
    return seg.end


def clip_seek(start: float) -> int:
    """The `seek` faster-whisper's batched pipeline gives a clip starting at `start` (same rounding)."""
    return int(int(start * ASR_SAMPLE_RATE) / ASR_SAMPLE_RATE * FRAMES_PER_SECOND)


def clamp_segment(seg: Segment, start: float, end: float) -> None:
    """Pull `seg` and its words inside [start, end]."""
    seg.start = min(max(seg.start, start), end)
    seg.end = min(max(seg.end, seg.start), end)
    for word in seg.words:
        word.start = min(max(word.start, seg.start), seg.end)
        word.end = min(max(word.end, word.start), seg.end)
