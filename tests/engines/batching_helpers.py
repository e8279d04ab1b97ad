"""What the cross-request batching tests of every engine family share: engines built with batching on or
off, long requests with VAD regions, concurrent requests released together, a spy on the batcher's engine
call, a bound caller whose request is abandoned."""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from talkies.engines import create_engine
from talkies.engines.base import (
    CallControl,
    EngineContext,
    Region,
    TranscriptionRequest,
    bind_call,
    unbind_call,
)
from talkies.engines.batching import Batcher
from talkies.registry import ModelSpec
from tests.fixtures.speech import long_speech


@contextlib.contextmanager
def engine_builder(
    spec_for: Callable[[int], ModelSpec], context_for: Callable[[bool], EngineContext]
) -> Iterator[Callable[..., Any]]:
    """`build(batching, max_batch_size=4, max_wait_s=3600.0)`: a loaded engine of `spec_for(max_batch_size)`
    in `context_for(batching)`, its batch timer set to `max_wait_s` (the default hour, beyond the registry's
    bound: only full batches close). Every engine built is unloaded at the end."""
    engines: list[Any] = []

    def build(batching: bool, max_batch_size: int = 4, max_wait_s: float = 3600.0) -> Any:
        engine = create_engine(spec_for(max_batch_size), context_for(batching))
        engine.max_batch_wait_s = max_wait_s
        engine.load()
        engines.append(engine)
        return engine

    try:
        yield build
    finally:
        for engine in engines:
            engine.unload()


def regions_request(seconds: float, **options: Any) -> TranscriptionRequest:
    """`seconds` of generated speech with its VAD regions (the speech spans)."""
    speech = long_speech(seconds)
    regions = tuple(Region(start, end) for start, end in speech.spans)
    return TranscriptionRequest(audio=speech.audio, regions=regions, **options)


def concurrently(engine: Any, requests: list[TranscriptionRequest]) -> list[Any]:
    """Each request in its own thread, all started together; each one's result or exception."""
    barrier = threading.Barrier(len(requests))

    def one(req: TranscriptionRequest) -> Any:
        barrier.wait(60)
        try:
            return engine.transcribe(req)
        except Exception as exc:  # the test inspects it
            return exc

    with ThreadPoolExecutor(len(requests)) as threads:
        return list(threads.map(one, requests))


class BatchSpy:
    """Wraps a batcher's engine call: units per call, optionally holding the first call on an Event and
    failing the calls `fail` names (1-based)."""

    def __init__(self, batcher: Batcher[Any, Any, Any], *, hold_first: bool = False) -> None:
        self.sizes: list[int] = []
        self.fail: set[int] = set()
        self.first_started = threading.Event()
        self.release = threading.Event()
        if not hold_first:
            self.release.set()
        self._real: Callable[[Any, list[Any]], Sequence[Any]] = batcher._run_batch
        batcher._run_batch = self  # type: ignore[method-assign]

    def __call__(self, key: Any, units: list[Any]) -> Sequence[Any]:
        self.sizes.append(len(units))
        if len(self.sizes) == 1:
            self.first_started.set()
            assert self.release.wait(300)
        if len(self.sizes) in self.fail:
            raise RuntimeError("CUDA out of memory (simulated)")
        return self._real(key, units)


class SubmitCounter:
    """Counts `batcher.submit` calls: a test waits until a request's units are queued."""

    def __init__(self, batcher: Batcher[Any, Any, Any]) -> None:
        self.submitted = threading.Semaphore(0)
        submit = batcher.submit

        def counting(*args: Any) -> Any:
            ticket = submit(*args)
            self.submitted.release()
            return ticket

        batcher.submit = counting  # type: ignore[method-assign]

    def wait(self, timeout: float = 120) -> None:
        assert self.submitted.acquire(timeout=timeout), "the request never reached the batcher"


def run_bound(
    engine: Any,
    request: TranscriptionRequest,
    outcome: dict[str, Any],
    name: str,
    control: CallControl | None = None,
) -> threading.Thread:
    """`engine.transcribe(request)` in a thread bound to `control` (None: never abandoned); its result or
    exception lands in `outcome[name]`."""

    def run() -> None:
        token = bind_call(control)
        try:
            outcome[name] = engine.transcribe(request)
        except BaseException as exc:
            outcome[name] = exc
        finally:
            unbind_call(token)

    thread = threading.Thread(target=run)
    thread.start()
    return thread
