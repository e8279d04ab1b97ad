"""Cross-request batching on the real whisper engine (faster-whisper on a generated micro model).

Concurrent requests run in threads released together by a barrier; which windows share a call may vary
with scheduling, so the tests check what must hold for any grouping: the same results as batching off,
the size limit, fewer calls than requests once they all wait together (the size limit closes the
batch, the timer is an hour), one error per request of a failed batch, a lone window on the timer.
"""

from __future__ import annotations

import dataclasses
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from faster_whisper import BatchedInferencePipeline

from talkies.engines.base import EngineContext, Region, TranscriptionRequest, TranscriptionResult
from talkies.engines.whisper.engine import WhisperEngine, batchable_short_file
from talkies.registry import ModelSpec
from tests.engines.batching_helpers import concurrently, engine_builder, regions_request
from tests.fixtures.cache import install_snapshot
from tests.fixtures.speech import speech_clip
from tests.fixtures.whisper import build_whisper

pytestmark = pytest.mark.slow

BOUNDED = {"beam_size": 1, "max_new_tokens": 12, "condition_on_previous_text": False}


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return install_snapshot(build_whisper("micro"), tmp_path_factory.mktemp("data"), "whisper-micro")


@pytest.fixture
def make(model_dir: Path) -> Iterator[Callable[..., WhisperEngine]]:
    def spec(max_batch_size: int) -> ModelSpec:
        return ModelSpec(
            slug="whisper-micro", executor="whisper", repo="test/whisper-micro", max_batch_size=max_batch_size
        )

    def context(batching: bool) -> EngineContext:
        options: dict[str, object] = {**BOUNDED, "batching": batching}
        return EngineContext(
            slug="whisper-micro", model_dir=model_dir, device="cpu", cpu_threads=1, options=options
        )

    with engine_builder(spec, context) as build:
        yield build


@pytest.fixture
def forward_passes(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Windows per encode+generate call, on either path."""
    sizes: list[int] = []
    generate = BatchedInferencePipeline.generate_segment_batched

    def spy(self: Any, features: Any, *args: Any) -> Any:
        sizes.append(len(features))
        return generate(self, features, *args)

    monkeypatch.setattr(BatchedInferencePipeline, "generate_segment_batched", spy)
    return sizes


def shape(result: TranscriptionResult) -> list[tuple[Any, ...]]:
    return [
        (s.text, s.start, s.end, s.avg_logprob, [(w.word, w.start, w.end) for w in s.words])
        for s in result.segments
    ]


def test_batching_on_and_off_give_the_same_transcripts_with_mixed_options(
    make: Callable[..., WhisperEngine], forward_passes: list[int]
) -> None:
    requests = [
        regions_request(70.0, language="en", temperature=0.0, word_timestamps=True),
        regions_request(45.0, language="en", temperature=0.0, word_timestamps=True),
        regions_request(40.0, language="en", temperature=0.0, word_timestamps=False),
        regions_request(35.0, language="en", temperature=0.0, prompt="Hello there."),
        regions_request(50.0, language="de", temperature=0.0, word_timestamps=True),
        regions_request(30.5, temperature=0.0, word_timestamps=True),  # language detected per request
    ]
    off = make(batching=False)
    expected = [off.transcribe(r) for r in requests]
    unbatched_passes = len(forward_passes)
    forward_passes.clear()

    on = make(batching=True, max_batch_size=4, max_wait_s=0.2)
    got = concurrently(on, requests)

    for want, have in zip(expected, got, strict=True):
        assert isinstance(have, TranscriptionResult), have
        assert have.language == want.language
        assert have.text == want.text
        assert shape(have) == shape(want), "same segments, timestamps and words"
    assert all(size <= 4 for size in forward_passes)
    assert sum(forward_passes) >= unbatched_passes, "every window decoded"


def test_n_concurrent_requests_take_fewer_than_n_forward_passes(
    make: Callable[..., WhisperEngine], forward_passes: list[int]
) -> None:
    engine = make(batching=True, max_batch_size=3)  # the timer is an hour: only full batches close
    requests = [
        regions_request(20.0, language="en", temperature=0.0, word_timestamps=False) for _ in range(6)
    ]
    results = concurrently(engine, requests)
    assert all(isinstance(r, TranscriptionResult) and r.segments for r in results), results
    assert forward_passes == [3, 3], "six one-window requests, two calls of max_batch_size"
    sizes, _, timer_closed = engine.batch_stats.snapshot()
    assert sizes == {3: 2}
    assert timer_closed == 0


def test_a_failed_batch_answers_each_of_its_requests_with_the_error(
    make: Callable[..., WhisperEngine], monkeypatch: pytest.MonkeyPatch
) -> None:
    engine = make(batching=True, max_batch_size=2)

    def broken(self: Any, features: Any, *args: Any) -> Any:
        raise RuntimeError("CUDA out of memory (simulated)")

    monkeypatch.setattr(BatchedInferencePipeline, "generate_segment_batched", broken)
    results = concurrently(engine, [regions_request(20.0, language="en", temperature=0.0) for _ in range(2)])
    for result in results:
        assert isinstance(result, RuntimeError)
        assert "CUDA out of memory (simulated)" in str(result)
    monkeypatch.undo()
    after = concurrently(engine, [regions_request(20.0, language="en", temperature=0.0) for _ in range(2)])
    assert all(isinstance(r, TranscriptionResult) and r.segments for r in after), "the model serves on"


def test_a_lone_request_closes_on_the_timer_with_one_window(
    make: Callable[..., WhisperEngine], forward_passes: list[int]
) -> None:
    engine = make(batching=True, max_batch_size=8, max_wait_s=0.005)
    result = engine.transcribe(regions_request(20.0, language="en", temperature=0.0))
    assert result.segments
    assert forward_passes == [1]
    sizes, _, timer_closed = engine.batch_stats.snapshot()
    assert sizes == {1: 1}
    assert timer_closed == 1


def test_streaming_gets_segments_as_their_batch_finishes(
    make: Callable[..., WhisperEngine], monkeypatch: pytest.MonkeyPatch
) -> None:
    engine = make(batching=True, max_batch_size=2, max_wait_s=0.005)
    calls: list[int] = []
    second_may_run = threading.Event()
    generate = BatchedInferencePipeline.generate_segment_batched

    def held(self: Any, features: Any, *args: Any) -> Any:
        calls.append(len(features))
        if len(calls) == 2:
            assert second_may_run.wait(60)
        return generate(self, features, *args)

    monkeypatch.setattr(BatchedInferencePipeline, "generate_segment_batched", held)
    stream = engine.transcribe_stream(
        regions_request(150.0, language="en", temperature=0.0, word_timestamps=False)
    )
    try:
        first = next(stream)  # the second batch is held: this can only come from the first
        assert first.start < 60.0
        assert len(calls) <= 2
    finally:
        second_may_run.set()
    rest = list(stream)
    assert len(calls) >= 3, "a 150 s file is more than two windows"
    assert rest, "later batches stream on"


def test_batching_off_decodes_per_request(make: Callable[..., WhisperEngine]) -> None:
    engine = make(batching=False)
    assert engine._batcher is None
    assert engine.transcribe(regions_request(20.0, language="en", temperature=0.0)).segments
    assert engine.batch_stats.snapshot() == ({}, 0.0, 0)


def test_silence_is_not_submitted(make: Callable[..., WhisperEngine]) -> None:
    engine = make(batching=True)
    result = engine.transcribe(TranscriptionRequest(audio=np.zeros(16_000 * 40, np.float32), regions=()))
    assert result.segments == []


def test_in_a_worker_process_the_batcher_lives_beside_the_engine(model_dir: Path) -> None:
    """Isolated (the whisper default): the worker's request threads share its batcher, and its totals
    come back over the link for /metrics. Three requests, a 10 s window (the registry's bound) to meet."""
    from talkies.workers import ProcessEngine

    spec = ModelSpec(
        slug="whisper-micro",
        executor="whisper",
        repo="test/whisper-micro",
        max_concurrency=3,
        max_batch_size=3,
        max_batch_wait_ms=10_000,
    )
    context = EngineContext(
        slug=spec.slug,
        model_dir=model_dir,
        device="cpu",
        cpu_threads=1,
        options={**BOUNDED, "batching": True},
    )
    engine = ProcessEngine(spec, context, target="talkies.engines.whisper.engine:WhisperEngine")
    engine.load()
    try:
        requests = [
            regions_request(20.0, language="en", temperature=0.0, word_timestamps=False) for _ in range(3)
        ]
        results = concurrently(engine, requests)  # type: ignore[arg-type]
        assert all(isinstance(r, TranscriptionResult) and r.segments for r in results), results
        snapshot = engine.batch_snapshot()
        assert snapshot is not None
        sizes, _, _ = snapshot
        assert sum(size * n for size, n in sizes.items()) == 3, "every window went through the batcher"
        assert max(sizes) >= 2, "requests shared a call in the worker"
    finally:
        engine.unload()
    assert engine.batch_snapshot() is None, "no worker, no totals"


def test_a_request_cancelled_while_its_windows_wait_leaves_the_others_intact(
    make: Callable[..., WhisperEngine], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The owner is held in a first batch while A (one window) and B (two windows) queue; A's request is
    abandoned; once released, the next call holds B's two windows only, and B's result is B's alone."""
    from talkies.engines.base import CallCancelled, CallControl, bind_call, unbind_call

    on = make(batching=True, max_batch_size=2)  # the timer is an hour: only full batches close
    wanted = make(batching=False).transcribe(regions_request(40.0, language="en", temperature=0.0))
    calls: list[int] = []
    release = threading.Event()
    generate = BatchedInferencePipeline.generate_segment_batched

    def held(self: Any, features: Any, *args: Any) -> Any:
        calls.append(len(features))
        if len(calls) == 1:
            assert release.wait(120)
        return generate(self, features, *args)

    monkeypatch.setattr(BatchedInferencePipeline, "generate_segment_batched", held)
    batcher = on._batcher
    assert batcher is not None
    submitted = threading.Semaphore(0)
    submit = batcher.submit

    def counting_submit(*args: Any) -> Any:
        ticket = submit(*args)
        submitted.release()
        return ticket

    monkeypatch.setattr(batcher, "submit", counting_submit)
    control = CallControl()
    outcome: dict[str, Any] = {}

    def run(name: str, req: TranscriptionRequest, bound: CallControl | None = None) -> None:
        token = bind_call(bound)
        try:
            outcome[name] = on.transcribe(req)
        except BaseException as exc:
            outcome[name] = exc
        finally:
            unbind_call(token)

    first = threading.Thread(
        target=run, args=("first", regions_request(40.0, language="en", temperature=0.0))
    )
    first.start()
    assert submitted.acquire(timeout=120)
    a = threading.Thread(
        target=run, args=("a", regions_request(20.0, language="en", temperature=0.0), control)
    )
    b = threading.Thread(target=run, args=("b", regions_request(40.0, language="en", temperature=0.0)))
    a.start()
    assert submitted.acquire(timeout=120)
    b.start()
    assert submitted.acquire(timeout=120)
    control.cancel()
    a.join(120)
    assert isinstance(outcome["a"], CallCancelled)
    release.set()
    for thread in (first, b):
        thread.join(300)
    assert calls == [2, 2], "first's two windows, then B's two: A's window never reached the engine"
    assert isinstance(outcome["b"], TranscriptionResult)
    assert shape(outcome["b"]) == shape(wanted)
    assert shape(outcome["first"]) == shape(wanted)


def short_file(seconds: float, **options: Any) -> TranscriptionRequest:
    """A file under TALKIES_VAD_CHUNK_THRESHOLD: the server sends it without regions."""
    return TranscriptionRequest(audio=speech_clip(seconds), **options)


def test_short_files_with_one_temperature_are_batched_like_one_clip(
    make: Callable[..., WhisperEngine], forward_passes: list[int]
) -> None:
    """Short files that ask for one temperature join the batches as one whole-file clip each: the same
    segments as the per-request decode of that clip, in fewer calls than requests."""
    requests = [
        short_file(8.0, language="en", temperature=0.0, word_timestamps=True),
        short_file(12.0, language="en", temperature=0.0, word_timestamps=True),
        short_file(5.0, language="en", temperature=0.0, word_timestamps=True),
        short_file(20.0, language="en", temperature=0.0, word_timestamps=True),
        short_file(6.0, language="en", temperature=0.0, prompt="Hello there."),
        short_file(9.0, language="de", temperature=0.0),
    ]
    assert all(batchable_short_file(r, len(r.audio) / 16_000) for r in requests)
    off = make(batching=False)
    expected = [
        off.transcribe(dataclasses.replace(r, regions=(Region(0.0, len(r.audio) / 16_000),)))
        for r in requests
    ]
    forward_passes.clear()
    on = make(batching=True, max_batch_size=4)  # the timer is an hour: only full batches close
    got = concurrently(on, requests[:4])  # four with equal options: exactly one full call
    assert forward_passes == [4], "four short files, one call"
    for want, have in zip(expected[:4], got, strict=True):
        assert isinstance(have, TranscriptionResult), have
        assert have.text == want.text
        assert shape(have) == shape(want), "same segments, timestamps and words"
    on_timer = make(batching=True, max_batch_size=4, max_wait_s=0.2)
    forward_passes.clear()
    mixed = concurrently(on_timer, requests)
    for want, have in zip(expected, mixed, strict=True):
        assert isinstance(have, TranscriptionResult), have
        assert shape(have) == shape(want)
    assert sum(forward_passes) == len(requests)
    assert all(size <= 4 for size in forward_passes)


def test_short_files_that_need_the_temperature_fallback_stay_sequential(
    make: Callable[..., WhisperEngine], forward_passes: list[int]
) -> None:
    """No temperature: Whisper's fallback list, which only the sequential path runs; and a file longer
    than one window without regions. Neither reaches the batcher."""
    engine = make(batching=True, max_batch_size=2, max_wait_s=0.005)
    fallback = short_file(8.0, language="en")
    assert not batchable_short_file(fallback, 8.0)
    assert engine.transcribe(fallback).segments
    long_unsplit = short_file(40.0, language="en", temperature=0.0)
    assert not batchable_short_file(long_unsplit, 40.0)
    assert engine.transcribe(long_unsplit).segments
    assert forward_passes == []
    assert engine.batch_stats.snapshot() == ({}, 0.0, 0)
