"""Cross-request batching on the VAD-region engines: onnx-asr Parakeet (`parakeet_cpp`), NeMo Parakeet
(`parakeet`) and NeMo Canary (`canary_multitask`), each on the tiny generated checkpoints its engine tests
use. The unit is a clip (a VAD region, or the whole file without regions).

As in test_whisper_batching.py, which units share a call may vary with scheduling, so the tests check
what holds for any grouping (same results as batching off, the size limit) and pin the grouping only
where the events fix it: the timer is an hour unless a test says otherwise, so only full batches close.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from talkies.engines.base import (
    CallCancelled,
    CallControl,
    EngineContext,
    TranscriptionRequest,
    TranscriptionResult,
)
from talkies.registry import ModelSpec
from tests.engines.batching_helpers import (
    BatchSpy,
    SubmitCounter,
    concurrently,
    engine_builder,
    regions_request,
    run_bound,
)
from tests.fixtures.cache import install_snapshot
from tests.fixtures.nemo import install_nemo
from tests.fixtures.parakeet_onnx import build_parakeet_onnx
from tests.fixtures.speech import speech_clip

pytestmark = pytest.mark.slow


@dataclass(frozen=True)
class Family:
    executor: str
    target: str
    fields: dict[str, Any]
    mixed: tuple[dict[str, Any], ...]  # per-request options, some of which cannot share a call


FAMILIES = {
    "parakeet_cpp": Family(
        "parakeet_cpp",
        "talkies.engines.parakeet_cpp.engine:ParakeetCppEngine",
        {},
        ({"language": "de"}, {"language": "en"}, {"language": "de"}, {}, {"language": "en"}, {}),
    ),
    "parakeet": Family(
        "parakeet",
        "talkies.engines.nemo.parakeet:ParakeetEngine",
        {"languages": ("en",)},
        ({"language": "en"}, {}, {"language": "en"}, {}, {}, {}),
    ),
    "canary": Family(
        "canary_multitask",
        "talkies.engines.nemo.canary:CanaryEngine",
        {"default_source_lang": "en"},
        ({"language": "de"}, {}, {"language": "fr"}, {"language": "de", "task": "translate"}, {}, {}),
    ),
}


@pytest.fixture(scope="module", params=sorted(FAMILIES))
def family(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> tuple[Family, Path]:
    name: str = request.param
    data = tmp_path_factory.mktemp(name)
    if name == "parakeet_cpp":
        return FAMILIES[name], install_snapshot(build_parakeet_onnx("tdt", tagged=True), data, "m")
    install_nemo("tdt" if name == "parakeet" else "canary", data, "m")
    return FAMILIES[name], data / "models" / "m"


def spec_of(family: Family, **fields: Any) -> ModelSpec:
    return ModelSpec.model_validate(
        {"slug": "m", "executor": family.executor, "repo": "test/m", **family.fields, **fields}
    )


def context_of(model_dir: Path, batching: bool) -> EngineContext:
    return EngineContext("m", model_dir, "cpu", cpu_threads=1, options={"batching": batching})


@pytest.fixture
def make(family: tuple[Family, Path]) -> Iterator[Callable[..., Any]]:
    kind, model_dir = family
    with engine_builder(
        lambda size: spec_of(kind, max_batch_size=size), lambda on: context_of(model_dir, on)
    ) as build:
        yield build


def one_clip(**options: Any) -> TranscriptionRequest:
    """A short file without regions: one unit."""
    return TranscriptionRequest(audio=speech_clip(4.0), **options)


def shape(result: TranscriptionResult) -> list[tuple[Any, ...]]:
    return [(s.text, s.start, s.end, [(w.word, w.start, w.end) for w in s.words]) for s in result.segments]


def spy_on(engine: Any, *, hold_first: bool = False) -> BatchSpy:
    assert engine._batcher is not None, "batching is on"
    return BatchSpy(engine._batcher, hold_first=hold_first)


def test_batching_on_and_off_give_the_same_results_with_mixed_options(
    family: tuple[Family, Path], make: Callable[..., Any]
) -> None:
    kind, _ = family
    seconds = (22.0, 15.0, 30.0, 12.0, 18.0, 9.0)
    requests = [regions_request(s, **opts) for s, opts in zip(seconds, kind.mixed, strict=True)]
    off = make(batching=False)
    expected = [off.transcribe(r) for r in requests]
    on = make(batching=True, max_batch_size=4, max_wait_s=0.2)
    spy = spy_on(on)
    got = concurrently(on, requests)
    for want, have in zip(expected, got, strict=True):
        assert isinstance(have, TranscriptionResult), have
        assert (have.language, have.text) == (want.language, want.text)
        assert shape(have) == shape(want), "same segments, timestamps and words"
    assert spy.sizes
    assert all(size <= 4 for size in spy.sizes), spy.sizes
    units = sum(len(r.regions or ()) for r in requests)
    assert sum(spy.sizes) == units, "every region decoded once"
    assert len(spy.sizes) < units


def test_n_concurrent_requests_take_fewer_than_n_calls(make: Callable[..., Any]) -> None:
    engine = make(batching=True, max_batch_size=3)  # the timer is an hour: only full batches close
    spy = spy_on(engine)
    results = concurrently(engine, [one_clip() for _ in range(6)])
    assert all(isinstance(r, TranscriptionResult) for r in results), results
    assert spy.sizes == [3, 3], "six one-clip requests, two calls of max_batch_size"
    sizes, _, timer_closed = engine.batch_stats.snapshot()
    assert sizes == {3: 2}
    assert timer_closed == 0


def test_a_failed_batch_fails_only_its_requests(make: Callable[..., Any]) -> None:
    """Four one-clip requests, batches of two: the first call fails, so exactly two requests get the
    engine's error and the other two their transcripts."""
    engine = make(batching=True, max_batch_size=2)
    wanted = make(batching=False).transcribe(one_clip())
    spy = spy_on(engine)
    spy.fail = {1}
    results = concurrently(engine, [one_clip() for _ in range(4)])
    failed = [r for r in results if isinstance(r, RuntimeError)]
    served = [r for r in results if isinstance(r, TranscriptionResult)]
    assert len(failed) == 2, results
    assert all("CUDA out of memory (simulated)" in str(e) for e in failed)
    assert len(served) == 2
    assert all(shape(r) == shape(wanted) for r in served)
    assert spy.sizes == [2, 2]


def test_a_lone_request_closes_on_the_timer_with_one_unit(make: Callable[..., Any]) -> None:
    engine = make(batching=True, max_batch_size=8, max_wait_s=0.005)
    spy = spy_on(engine)
    assert isinstance(engine.transcribe(one_clip()), TranscriptionResult)
    assert spy.sizes == [1]
    sizes, _, timer_closed = engine.batch_stats.snapshot()
    assert sizes == {1: 1}
    assert timer_closed == 1


def test_a_request_cancelled_while_its_unit_waits_leaves_the_others_intact(
    make: Callable[..., Any],
) -> None:
    """The owner is held in a first batch (two requests) while A, then B and C queue; A's request is
    abandoned before B and C arrive; once released, the next call holds B's and C's clips: A's never
    reached the engine (had it stayed, C would wait the hour-long timer alone)."""
    on = make(batching=True, max_batch_size=2)
    wanted = make(batching=False).transcribe(one_clip())
    spy = spy_on(on, hold_first=True)
    counter = SubmitCounter(on._batcher)
    outcome: dict[str, Any] = {}
    threads = [run_bound(on, one_clip(), outcome, name) for name in ("first", "second")]
    counter.wait()
    counter.wait()
    assert spy.first_started.wait(120)
    control = CallControl()
    a = run_bound(on, one_clip(), outcome, "a", control)
    counter.wait()
    control.cancel()
    a.join(120)
    assert isinstance(outcome["a"], CallCancelled)
    threads += [run_bound(on, one_clip(), outcome, name) for name in ("b", "c")]
    counter.wait()
    counter.wait()
    spy.release.set()
    for thread in threads:
        thread.join(300)
    assert spy.sizes == [2, 2]
    for name in ("first", "second", "b", "c"):
        assert isinstance(outcome[name], TranscriptionResult), outcome[name]
        assert shape(outcome[name]) == shape(wanted)


def test_a_stream_gets_its_first_region_before_the_rest_are_decoded(make: Callable[..., Any]) -> None:
    engine = make(batching=True, max_batch_size=8, max_wait_s=0.005)
    if not hasattr(engine, "transcribe_stream"):
        pytest.skip("the NeMo engines answer whole results")
    spy = spy_on(engine)
    request = regions_request(30.0, language="de")  # pinned: the tagged test model decodes words
    regions = request.regions or ()
    stream = engine.transcribe_stream(request)
    first = next(stream)
    assert spy.sizes == [1], "the first region alone, as on the per-request path"
    assert first.end <= regions[0].end + 0.001
    rest = list(stream)
    assert sum(spy.sizes) == len(regions)
    assert [first, *rest] == engine.transcribe(request).segments


def test_batching_off_has_no_batcher(make: Callable[..., Any]) -> None:
    engine = make(batching=False)
    assert engine._batcher is None
    assert isinstance(engine.transcribe(one_clip()), TranscriptionResult)
    assert engine.batch_snapshot() is None


def test_in_a_worker_process_the_batcher_lives_beside_the_engine(family: tuple[Family, Path]) -> None:
    """Isolated (the default for these executors): the worker's request threads share its batcher, and
    its totals come back over the link for /metrics. Three one-clip requests, a 10 s window to meet."""
    from talkies.workers import ProcessEngine

    kind, model_dir = family
    spec = spec_of(kind, max_concurrency=3, max_batch_size=3, max_batch_wait_ms=10_000)
    engine = ProcessEngine(spec, context_of(model_dir, True), target=kind.target)
    engine.load()
    try:
        results = concurrently(engine, [one_clip() for _ in range(3)])
        assert all(isinstance(r, TranscriptionResult) for r in results), results
        snapshot = engine.batch_snapshot()
        assert snapshot is not None
        sizes, _, _ = snapshot
        assert sum(size * n for size, n in sizes.items()) == 3, "every clip went through the batcher"
        assert max(sizes) >= 2, "requests shared a call in the worker"
    finally:
        engine.unload()
