"""Engines that implement the Protocols without a model, for pool and API-shape tests only.

They never count as testing an engine: real engines are tested on generated models in tests/engines/.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import anyio
import numpy as np

from talkies.engines.base import (
    AudioChunk,
    EngineContext,
    Segment,
    SpeechRequest,
    TranscriptionRequest,
    TranscriptionResult,
    Voice,
)
from talkies.registry import ModelSpec


@dataclass
class FakeBehaviour:
    """Knobs a test turns on one model's fake engine."""

    load_delay: float = 0.0
    load_error: Exception | None = None
    unload_error: Exception | None = None
    gate: threading.Event | None = None  # transcribe/synthesize block until set
    memory: int | None = None  # bytes the loaded engine reports holding (the pool's memory budget)
    loads: int = 0
    unloads: int = 0
    calls: int = 0
    active: int = 0
    max_active: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)
    worker: FakeWorker | None = None  # a worker process shared by the slugs that name the same one
    ledger: FakeLedger | None = None  # set by FakeFactory: what every engine of the factory does


@dataclass
class FakeWorker:
    """Stands for a worker process several slugs share: killed once, every engine in it is gone."""

    alive: bool = True


@dataclass
class FakeLedger:
    """Across all engines of a factory: engines holding memory now (a load started, no unload or crash
    since) and the most at once, the threads unloads ran on, and unloads under a running call."""

    live: int = 0
    max_live: int = 0
    unload_threads: list[str] = field(default_factory=list)
    unloads_under_a_call: list[str] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def change(self, delta: int) -> None:
        with self.lock:
            self.live += delta
            self.max_live = max(self.max_live, self.live)


class FakeEngine:
    can_translate = True
    batches_regions = False

    def __init__(self, spec: ModelSpec, context: EngineContext, behaviour: FakeBehaviour) -> None:
        self.spec = spec
        self.context = context
        self.behaviour = behaviour
        self.loaded = False
        self.active = 0  # calls inside this engine now
        self.holds = False  # counted live in the ledger
        self.dead = False  # crashed: its memory is gone

    @property
    def alive(self) -> bool:
        worker = self.behaviour.worker
        return not self.dead and (worker is None or worker.alive)

    def _hold(self, holds: bool) -> None:
        ledger = self.behaviour.ledger
        if ledger is not None and holds != self.holds:
            self.holds = holds
            ledger.change(1 if holds else -1)

    def crash(self) -> None:
        """The engine's process died: it holds no memory any more."""
        self.dead = True
        self._hold(False)

    def load(self) -> None:
        b = self.behaviour
        with b.lock:
            b.loads += 1
        self._hold(True)
        try:
            self._load()
        except BaseException:
            self._hold(False)
            raise

    def _load(self) -> None:
        b = self.behaviour
        if b.load_delay:
            time.sleep(b.load_delay)
        if b.load_error is not None:
            raise b.load_error
        self.loaded = True

    def memory_bytes(self) -> int | None:
        return self.behaviour.memory

    def unload(self) -> None:
        b = self.behaviour
        with b.lock:
            b.unloads += 1
        ledger = b.ledger
        if ledger is not None:
            with ledger.lock:
                ledger.unload_threads.append(threading.current_thread().name)
                if self.active and not self.dead:
                    ledger.unloads_under_a_call.append(self.spec.slug)
        self.loaded = False
        self._hold(False)
        if b.unload_error is not None:
            raise b.unload_error

    def _work(self) -> None:
        b = self.behaviour
        assert self.loaded, "engine used while not loaded"
        with b.lock:
            b.calls += 1
            b.active += 1
            self.active += 1
            b.max_active = max(b.max_active, b.active)
        try:
            if b.gate is not None:
                b.gate.wait(10)
            assert self.loaded, "engine unloaded under a running request"
        finally:
            with b.lock:
                b.active -= 1
                self.active -= 1

    def transcribe(self, request: TranscriptionRequest) -> TranscriptionResult:
        self._work()
        duration = len(request.audio) / 16000
        return TranscriptionResult(
            text=" fake",
            language=request.language or "en",
            duration=duration,
            segments=[Segment(0, duration, " fake")],
        )

    def voices(self) -> list[Voice]:
        return [Voice("alpha", default=True), Voice("beta")]

    def synthesize(self, request: SpeechRequest) -> Iterator[AudioChunk]:
        self._work()
        yield AudioChunk(np.zeros(2400, dtype=np.float32), 24000)


class FakeFactory:
    """engine_factory for ModelPool / create_app: one FakeBehaviour per slug."""

    def __init__(self) -> None:
        self.behaviours: dict[str, FakeBehaviour] = {}
        self.engines: list[FakeEngine] = []
        self.ledger = FakeLedger()

    def __getitem__(self, slug: str) -> FakeBehaviour:
        return self.behaviours.setdefault(slug, FakeBehaviour(ledger=self.ledger))

    def __call__(self, spec: ModelSpec, context: EngineContext) -> FakeEngine:
        engine = FakeEngine(spec, context, self[spec.slug])
        self.engines.append(engine)
        return engine


class FakeClock:
    def __init__(self, now: float = 1000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


async def wait_until(predicate: Callable[[], bool], limit: float = 5.0) -> None:
    """Poll a condition another thread changes (engine threads cannot set an asyncio.Event)."""
    with anyio.fail_after(limit):
        while not predicate():  # noqa: ASYNC110
            await asyncio.sleep(0.005)
