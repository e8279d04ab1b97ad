"""What the pool keeps per model (`Slot`), a request waiting for its turn (`Waiter`), and what the pool
reports as it works (`PoolEvents`). Every field of a slot but `places` is written only by the scheduler
(talkies.pool.scheduler); `places` belongs to admission (talkies.pool.admission)."""

from __future__ import annotations

import asyncio
import math
from collections import deque
from dataclasses import dataclass, field
from typing import Literal

from talkies.engines.base import Engine
from talkies.registry import ModelSpec

State = Literal["absent", "loading", "resident", "unloading"]


class PoolEvents:
    """What the pool reports as it works (talkies.metrics counts it). Every method is a no-op here."""

    def loaded(self, slug: str, seconds: float) -> None: ...
    def load_failed(self, slug: str, error: BaseException) -> None: ...
    def unloaded(self, slug: str) -> None: ...
    def evicted(self, slug: str) -> None: ...
    def engine_failed(self, slug: str, cause: str) -> None:
        """The model was dropped under its requests: cause "crash", "timeout" or "exited"."""

    def queue_timed_out(self, slug: str) -> None: ...


@dataclass(eq=False)
class Waiter:
    """A request waiting for a turn on its model: the scheduler answers `future` with the engine (the
    turn: a pin and a permit at once) or with the error that ends the request."""

    future: asyncio.Future[Engine]
    since: float  # loop time it arrived (swap fairness: the oldest waiter of a model)
    deadline: float | None  # loop time its queue clock runs out; None while its model loads
    left: float  # queue time left, kept while the clock is paused
    pinned: bool = False  # arrived while its model was resident and staying: served before an eviction

    @property
    def live(self) -> bool:
        return not self.future.done()


@dataclass(eq=False)
class Slot:
    spec: ModelSpec
    engine: Engine | None = None
    state: State = "absent"  # every state but absent counts for max_loaded_models and the budget
    queue: deque[Waiter] = field(default_factory=deque)
    running: int = 0  # turns granted on `engine` and not returned yet
    places: int = 0  # admission places held (tickets and acquires without one)
    last_used: float = 0.0  # the pool clock at its last pin or release
    loaded_at: float = 0.0
    resident_since: float = 0.0  # loop time of its last load (swap fairness)
    evicting: bool = False  # takes no new requests; unloaded once its running and pinned ones are done
    load_started: float = 0.0  # loop time
    load_abandoned: bool = False  # its load timed out: waiters answered, the thread still running
    retry_at: float = 0.0  # loop time before which no new load starts (after a failed one)
    load_error: str | None = None
    unload_error: str | None = None
    exited: str | None = None  # why its engine stopped on its own (an external server that exited)
    unload_done: list[asyncio.Future[None]] = field(default_factory=list)  # answered once it is absent

    @property
    def loaded(self) -> bool:
        return self.state == "resident" and self.engine is not None

    @property
    def occupies(self) -> bool:
        """Counts as resident for every limit: loaded, loading (even a load given up on) or unloading."""
        return self.state != "absent"

    @property
    def waiting(self) -> int:
        return sum(1 for w in self.queue if w.live)

    @property
    def busy(self) -> bool:
        """A call runs in it or a request waits for it (evicted last, and only for swap fairness)."""
        return self.running > 0 or any(w.live for w in self.queue)

    @property
    def drained(self) -> bool:
        """Nothing runs in it and no request that pinned it before it was marked still waits."""
        return self.running == 0 and not any(w.live and w.pinned for w in self.queue)

    def retry_after(self) -> int:
        """Seconds a refused request should wait: about one turn per `max_concurrency` requests queued."""
        return max(1, min(60, math.ceil(self.waiting / max(1, self.spec.max_concurrency))))


def alive(engine: Engine | None) -> bool:
    """False only for an engine that says its process has gone (a worker killed, a server that exited)."""
    return bool(getattr(engine, "alive", True))
