from __future__ import annotations

import numpy as np

from talkies.audio.pcm_join import CrossfadeJoiner, join_chunks

SR = 24_000


def _tone(freq: float, seconds: float, phase: float, offset: float = 0.0) -> np.ndarray:
    t = np.arange(round(SR * seconds)) / SR
    return (0.5 * np.sin(2 * np.pi * freq * t + phase) + offset).astype(np.float32)


def _max_step(signal: np.ndarray) -> float:
    return float(np.max(np.abs(np.diff(signal))))


def test_crossfade_removes_the_step_at_each_join() -> None:
    # Chunks that end and start at very different levels: a plain concatenation clicks.
    chunks = [_tone(220, 0.3, 0.0, +0.3), _tone(330, 0.3, np.pi, -0.3), _tone(180, 0.3, np.pi / 2, +0.2)]
    within = max(_max_step(c) for c in chunks)  # the largest sample-to-sample step inside any chunk

    naive = np.concatenate(chunks)
    seams = np.cumsum([c.size for c in chunks])[:-1]
    naive_seam = max(abs(float(naive[s] - naive[s - 1])) for s in seams)
    assert naive_seam > 5 * within  # the test signal really has clicks

    joined = np.concatenate(list(join_chunks(chunks, SR)))
    assert _max_step(joined) <= 1.5 * within  # no step anywhere larger than the signal's own


def test_length_and_streaming() -> None:
    chunks = [_tone(200, 0.1, 0.0), _tone(200, 0.2, 0.0), _tone(200, 0.05, 0.0)]
    joiner = CrossfadeJoiner(SR, 0.010)
    first = joiner.push(chunks[0])
    assert first.size == chunks[0].size - joiner.overlap  # emitted at once, minus the held-back tail
    out = [first, joiner.push(chunks[1]), joiner.push(chunks[2]), joiner.flush()]
    total = sum(o.size for o in out)
    assert total == sum(c.size for c in chunks) - 2 * joiner.overlap  # each join overlaps once


def test_short_and_empty_chunks() -> None:
    chunks = [_tone(200, 0.1, 0.0), np.zeros(0, np.float32), _tone(200, 0.0001, 0.0), _tone(200, 0.1, 0.0)]
    joined = np.concatenate(list(join_chunks(chunks, SR)))
    assert joined.dtype == np.float32
    assert np.all(np.isfinite(joined))
    assert joined.size >= 0.18 * SR


def test_single_chunk_passes_through_unchanged() -> None:
    chunk = _tone(300, 0.2, 0.3)
    np.testing.assert_array_equal(np.concatenate(list(join_chunks([chunk], SR))), chunk)
