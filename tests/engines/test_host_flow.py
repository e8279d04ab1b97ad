"""Worker engines: the engine timeout is time without progress, the buffer to the reader is bounded, and
a cancelled request reaches the worker (issue 19 items 1 and 3). Real worker processes, test engines."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import psutil
import pytest

from talkies.engines.base import CallControl, SpeechRequest, bind_call, unbind_call
from talkies.errors import EngineTimeoutError
from talkies.workers import worker as host_worker
from tests.engines.test_host import TTS, make_engine

__all__ = ["make_engine"]


def test_a_long_synthesis_that_keeps_producing_outlives_the_engine_timeout(make_engine: Any) -> None:
    engine = make_engine(TTS, call_timeout=3.0)
    engine.load()
    pid = engine.worker_pid
    # 6 chunks a second apart: about 5 s in all, past the 3 s timeout, never 3 s without a chunk.
    chunks = list(engine.synthesize(SpeechRequest("hi", "alpha", options={"chunks": 6, "pause": 1.0})))
    assert [int(c.pcm[0]) for c in chunks] == [0, 1, 2, 3, 4, 5]
    assert engine.worker_pid == pid


def test_a_reader_that_stalls_slows_the_worker_instead_of_getting_it_killed(make_engine: Any) -> None:
    engine = make_engine(TTS, call_timeout=1.0)
    engine.load()
    pid = engine.worker_pid
    worker = engine._worker
    chunks = engine.synthesize(SpeechRequest("hi", "alpha", options={"chunks": 20}))
    first = next(chunks)
    time.sleep(2.5)  # the client stops reading for longer than the engine timeout
    (inbox,) = worker._pending.values()
    assert inbox.qsize() <= host_worker.CHUNK_WINDOW  # the worker waited for room, not filled memory
    rest = list(chunks)
    assert [int(c.pcm[0]) for c in [first, *rest]] == list(range(20))
    assert engine.worker_pid == pid
    assert psutil.pid_exists(pid)


def test_an_engine_that_stops_producing_times_out_and_its_worker_is_killed(make_engine: Any) -> None:
    engine = make_engine(TTS, call_timeout=1.0)
    engine.load()
    pid = engine.worker_pid
    chunks = engine.synthesize(SpeechRequest("hi", "alpha", options={"chunks": 3, "pause": 3600}))
    next(chunks)
    with pytest.raises(EngineTimeoutError, match=r"made no progress for 1s"):
        next(chunks)
    assert not psutil.pid_exists(pid)
    assert engine.worker_pid is None


def test_a_cancelled_request_stops_the_synthesis_in_the_worker(make_engine: Any, tmp_path: Path) -> None:
    engine = make_engine(TTS)
    engine.load()
    marker = tmp_path / "marker"
    control = CallControl()
    token = bind_call(control)  # what BlockingSteps does in the thread that runs the engine call
    try:
        chunks = engine.synthesize(
            SpeechRequest("hi", "alpha", options={"chunks": 50, "pause": 0.05, "marker": str(marker)})
        )
        next(chunks)
        control.cancel()  # the client hung up: the worker hears it while the reader is still inside
        rest = list(chunks)
    finally:
        unbind_call(token)
    assert marker.exists()  # the worker had stopped the engine before the stream ended here
    assert len(rest) < 49
    assert len(list(engine.synthesize(SpeechRequest("hi", "beta", options={"chunks": 2})))) == 2
