"""The realtime input buffer: turns cut by a (scripted) VAD, prefix padding, manual commit, bounds."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from talkies.api.realtime.buffer import (
    BufferFullError,
    BufferTooSmallError,
    Committed,
    InputBuffer,
    Started,
    Stopped,
    VadConfig,
    item_ids,
)
from talkies.api.realtime.session import stable_growth
from talkies.audio.vad import WINDOW

RATE = 16_000


class ScriptedVad:
    """Scores windows from a script (1 = speech) instead of a model, keeping the real window bookkeeping."""

    def __init__(self, script: list[float]) -> None:
        self.script = iter(script)
        self.pending = 0

    def __call__(self, pcm: np.ndarray) -> np.ndarray:
        self.pending += pcm.size
        count, self.pending = divmod(self.pending, WINDOW)
        return np.array([next(self.script, 0.0) for _ in range(count)], dtype=np.float32)


def _ramp(samples: int, start: int = 0) -> np.ndarray:
    """Audio whose values are their own session positions, so a test can see which samples a turn holds."""
    return np.arange(start, start + samples, dtype=np.float32)


def _buffer(**kwargs: int) -> InputBuffer:
    counter = itertools.count(1)
    return InputBuffer(
        max_turn_samples=kwargs.get("max_turn", 10 * RATE), new_item_id=lambda: f"i{next(counter)}"
    )


def test_server_vad_turn_with_prefix_padding_and_the_silence() -> None:
    buffer = _buffer()
    script = [0.0] * 30 + [1.0] * 40 + [0.0] * 20  # speech in windows 30..69
    buffer.set_vad(
        VadConfig(0.5, prefix_padding_ms=320, silence_duration_ms=320), lambda: ScriptedVad(script)
    )
    events = []
    for at in range(0, 90 * WINDOW, 800):  # 50 ms pieces
        events += buffer.append(_ramp(800, at))
    started, stopped, committed = events
    assert started == Started("i1", audio_start_ms=(30 * WINDOW - 320 * 16) * 1000 // RATE)
    assert isinstance(stopped, Stopped)
    assert stopped.audio_end_ms == 80 * WINDOW * 1000 // RATE  # speech end + 10 silent windows
    assert isinstance(committed, Committed)
    assert (committed.item_id, committed.previous_item_id) == ("i1", None)
    assert committed.audio[0] == 30 * WINDOW - 320 * 16  # the prefix padding is in the turn
    assert committed.audio[-1] == 80 * WINDOW - 1
    assert buffer.start == 80 * WINDOW  # what follows stays for the next turn
    assert buffer.open_turn() is None


def test_between_turns_only_the_padding_is_kept() -> None:
    buffer = _buffer()
    buffer.set_vad(VadConfig(0.5, 300, 500), lambda: ScriptedVad([]))
    for at in range(0, 10 * RATE, 800):
        buffer.append(_ramp(800, at))
    assert buffer.buffered < 2 * RATE


def test_a_turn_reaching_the_limit_is_committed_there() -> None:
    buffer = _buffer(max_turn=RATE)
    buffer.set_vad(VadConfig(0.5, 0, 500), lambda: ScriptedVad([1.0] * 200))
    events = []
    for at in range(0, 3 * RATE, 800):
        events += buffer.append(_ramp(800, at))
    turns = [e for e in events if isinstance(e, Committed)]
    assert len(turns) >= 2
    assert all(t.audio.size == RATE for t in turns)
    assert turns[1].previous_item_id == turns[0].item_id


def test_manual_commit_clear_and_the_limits() -> None:
    buffer = _buffer(max_turn=RATE)
    buffer.append(_ramp(RATE // 20))
    with pytest.raises(BufferTooSmallError, match="at least 100ms"):
        buffer.commit()
    buffer.append(_ramp(RATE // 2, RATE // 20))
    with pytest.raises(BufferFullError, match="TALKIES_REALTIME_MAX_TURN_SECONDS"):
        buffer.append(_ramp(RATE // 2))
    first = buffer.commit()
    assert first.audio.size == RATE // 20 + RATE // 2
    assert first.previous_item_id is None
    buffer.append(_ramp(RATE // 4))
    cleared = buffer.item_id
    assert buffer.is_open(cleared)
    buffer.clear()
    assert not buffer.is_open(cleared)
    assert buffer.buffered == 0
    assert buffer.open_turn() is None
    buffer.append(_ramp(RATE // 4))
    second = buffer.commit()
    assert second.previous_item_id == first.item_id
    assert second.item_id not in (first.item_id, cleared)


def test_item_ids_are_unique_per_session_and_across_sessions() -> None:
    a, b = item_ids(), item_ids()
    ids = [a(), a(), b(), b()]
    assert len(set(ids)) == 4
    assert all(i.startswith("item_") for i in ids)


@pytest.mark.parametrize(
    ("emitted", "text", "final", "expected"),
    [
        ("", "the weather is", False, "the weather "),
        ("the weather ", "the weather is nice", False, "is "),
        ("the weather ", "the weather is nice", True, "is nice"),
        ("the weather ", "a whether is nice", True, ""),  # diverged: `completed` tells the truth
        ("", "hello", False, ""),  # one word may still change
        ("", "  hello   world ", True, "hello world"),
    ],
)
def test_deltas_only_append(emitted: str, text: str, final: bool, expected: str) -> None:
    assert stable_growth(emitted, text, final=final) == expected
