"""What the pool keeps per model (`Slot`), and what it reports as it works (`PoolEvents`)."""

from __future__ import annotations

import asyncio
import math
from dataclasses import dataclass, field

from talkies.engines.base import Engine
from talkies.registry import ModelSpec


class PoolEvents:
    """What the pool reports as it works (talkies.metrics counts it). Every method is a no-op here."""

    def loaded(self, slug: str, seconds: float) -> None: ...
    def load_failed(self, slug: str, error: BaseException) -> None: ...
    def unloaded(self, slug: str) -> None: ...
    def evicted(self, slug: str) -> None: ...
    def engine_failed(self, slug: str, cause: str) -> None:
        """The model was dropped under its requests: cause "crash", "timeout" or "exited"."""

    def queue_timed_out(self, slug: str) -> None: ...


@dataclass
class Slot:
    spec: ModelSpec
    semaphore: asyncio.Semaphore
    engine: Engine | None = None
    pins: int = 0  # requests holding the model resident (queued for a turn or running)
    running: int = 0
    waiting: int = 0  # requests that have not started running yet
    last_used: float = 0.0
    loaded_at: float = 0.0
    evicting: bool = False
    loading: bool = False
    # Queue clocks of the requests waiting for this model -> seconds they had left when paused (None:
    # running). Time spent loading the model a request asked for is not time in the queue.
    queue_clocks: dict[asyncio.Timeout, float | None] = field(default_factory=dict)
    load_error: str | None = None
    unload_error: str | None = None
    exited: str | None = None  # why its engine stopped on its own (an external server that exited)
    drained: asyncio.Event = field(default_factory=asyncio.Event)
    load_task: asyncio.Future[None] | None = None  # the one load in progress, shared by every waiter
    # Requests waiting for this model to become resident (not pinned yet) -> since when (loop time).
    wanting: dict[object, float] = field(default_factory=dict)
    making_room: bool = False  # a request is evicting others (or waiting to) so that this model loads
    resident_since: float = 0.0  # loop time of its last load (swap fairness)

    @property
    def loaded(self) -> bool:
        return self.engine is not None

    def add_pin(self) -> None:
        self.pins += 1
        self.drained.clear()

    def retry_after(self) -> int:
        """Seconds a refused request should wait: about one turn per `max_concurrency` requests queued."""
        return max(1, min(60, math.ceil(self.waiting / max(1, self.spec.max_concurrency))))

    # A request's queue clock (its TALKIES_QUEUE_TIMEOUT) stops while the model it asked for loads.

    def start_queue_clock(self, clock: asyncio.Timeout) -> None:
        self.queue_clocks[clock] = None
        if self.loading:  # arrived while its model loads: the clock starts when the load ends
            self.pause_queue_clocks()

    def pause_queue_clocks(self) -> None:
        now = asyncio.get_running_loop().time()
        for clock, left in self.queue_clocks.items():
            when = clock.when()
            if left is None and when is not None:
                self.queue_clocks[clock] = max(0.0, when - now)
                clock.reschedule(None)

    def resume_queue_clocks(self) -> None:
        now = asyncio.get_running_loop().time()
        for clock, left in self.queue_clocks.items():
            if left is not None:
                clock.reschedule(now + left)
                self.queue_clocks[clock] = None


def alive(engine: Engine | None) -> bool:
    """False only for an engine that says its process has gone (an external server that exited)."""
    return bool(getattr(engine, "alive", True))
