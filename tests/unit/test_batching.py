"""The cross-request batcher on a fake engine call: grouping, limits, cancellation, errors, the timer.

Every test holds the batcher's owner inside a first batch (an Event) while the next requests queue up,
so what lands in which batch follows from the events posted, never from how fast threads run.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator, Sequence
from concurrent.futures import CancelledError

import pytest

from talkies.engines.batching import Batcher, BatchRecord, BatchStats


class Spy:
    """A fake engine call: records each batch, can hold the first one, can fail on a marked unit."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, list[str]]] = []
        self.first_started = threading.Event()
        self.release = threading.Event()

    def __call__(self, key: str, units: list[str]) -> Sequence[str]:
        self.calls.append((key, list(units)))
        if len(self.calls) == 1:
            self.first_started.set()
            assert self.release.wait(60)
        if "boom" in units:
            raise ValueError("engine failed on this batch")
        return [f"{key}:{unit}" for unit in units]


@pytest.fixture
def spy() -> Spy:
    return Spy()


@pytest.fixture
def records() -> list[BatchRecord]:
    return []


@pytest.fixture
def batcher(spy: Spy, records: list[BatchRecord]) -> Iterator[Batcher[str, str, str]]:
    b: Batcher[str, str, str] = Batcher(
        "test", spy, max_batch_size=3, max_wait_s=0.0, on_batch=records.append
    )
    yield b
    spy.release.set()
    b.close()


def hold_owner(batcher: Batcher[str, str, str], spy: Spy) -> list[str]:
    """Put the owner inside a first (one-unit) batch; its result once released."""
    ticket = batcher.submit("warm", ["x"])
    assert spy.first_started.wait(60)
    return ticket.futures  # type: ignore[return-value]


def test_units_of_concurrent_requests_share_calls_within_the_size_limit(
    batcher: Batcher[str, str, str], spy: Spy
) -> None:
    hold_owner(batcher, spy)
    tickets = [batcher.submit("en", [f"r{i}u{j}" for j in range(2)]) for i in range(4)]
    spy.release.set()
    results = [list(t.results()) for t in tickets]
    assert results == [[f"en:r{i}u{j}" for j in range(2)] for i in range(4)]
    shared = spy.calls[1:]
    assert len(shared) < 4, "four requests, fewer calls"
    assert all(len(units) <= 3 for _, units in shared), "never more than max_batch_size units per call"
    assert sum(len(units) for _, units in shared) == 8


def test_units_whose_keys_differ_never_share_a_call(batcher: Batcher[str, str, str], spy: Spy) -> None:
    hold_owner(batcher, spy)
    a = batcher.submit("en", ["a1", "a2"])
    b = batcher.submit("de", ["b1"])
    spy.release.set()
    assert list(a.results()) == ["en:a1", "en:a2"]
    assert list(b.results()) == ["de:b1"]
    assert sorted(spy.calls[1:]) == [("de", ["b1"]), ("en", ["a1", "a2"])]


def test_a_cancelled_request_drops_its_pending_units_and_the_others_are_intact(
    batcher: Batcher[str, str, str], spy: Spy
) -> None:
    hold_owner(batcher, spy)
    gone = batcher.submit("en", ["g1", "g2", "g3"])
    kept = batcher.submit("en", ["k1", "k2"])
    gone.cancel()
    spy.release.set()
    assert list(kept.results()) == ["en:k1", "en:k2"]
    for future in gone.futures:
        with pytest.raises(CancelledError):
            future.result(timeout=60)
    decoded = [unit for _, units in spy.calls[1:] for unit in units]
    assert decoded == ["k1", "k2"], "the cancelled request's units never reached the engine"


def test_a_failed_batch_fails_each_of_its_requests_and_only_them(
    batcher: Batcher[str, str, str], spy: Spy
) -> None:
    hold_owner(batcher, spy)
    first = batcher.submit("en", ["boom"])
    second = batcher.submit("en", ["s1"])
    other = batcher.submit("de", ["o1"])  # another key: another call
    spy.release.set()
    for ticket in (first, second):
        with pytest.raises(ValueError, match="engine failed on this batch"):
            list(ticket.results())
    assert list(other.results()) == ["de:o1"]
    assert list(batcher.submit("en", ["later"]).results()) == ["en:later"], "the owner survives"


def test_a_lone_request_closes_on_the_timer_with_one_unit(spy: Spy) -> None:
    stats = BatchStats()
    lone: Batcher[str, str, str] = Batcher(
        "lone", spy, max_batch_size=8, max_wait_s=0.01, on_batch=stats.record
    )
    spy.release.set()
    try:
        assert list(lone.submit("en", ["only"]).results()) == ["en:only"]
    finally:
        lone.close()
    sizes, wait_s, timer_closed = stats.snapshot()
    assert sizes == {1: 1}
    assert timer_closed == 1, "closed by the timer, not by waiting for company that never came"
    assert wait_s >= 0.0


def test_full_batches_close_without_the_timer(spy: Spy, records: list[BatchRecord]) -> None:
    full: Batcher[str, str, str] = Batcher(
        "full", spy, max_batch_size=2, max_wait_s=3600, on_batch=records.append
    )
    spy.release.set()
    try:
        assert list(full.submit("en", ["a", "b", "c", "d"]).results()) == ["en:a", "en:b", "en:c", "en:d"]
    finally:
        full.close()
    assert [(r.size, r.reason) for r in records] == [(2, "full"), (2, "full")]


def test_close_fails_the_units_still_pending(spy: Spy) -> None:
    b: Batcher[str, str, str] = Batcher("closing", spy, max_batch_size=8, max_wait_s=3600)
    ticket = b.submit("en", ["never"])
    b.close()
    with pytest.raises(CancelledError):
        ticket.futures[0].result(timeout=60)
    assert spy.calls == []


def test_limits_are_checked() -> None:
    with pytest.raises(ValueError, match="max_batch_size"):
        Batcher("bad", Spy(), max_batch_size=0, max_wait_s=0.0)
