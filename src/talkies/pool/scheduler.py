"""The pool's one owner: a task that holds every residency decision (load, make room, evict, unload,
sweep, crash, timeout, shutdown) and consumes events.

Request tasks never touch residency state and never wait on a lock: they post an event (a closure the
owner runs) and await a future the owner answers. A turn on a model (a pin and a concurrency permit at
once) is granted by the owner when the model is resident and a permit is free; a request holds nothing
while it waits for one. Loads, unloads and memory measurements run in worker threads as tasks of the
owner, which report back with another event; nothing blocking runs on the event loop.

- A load in flight (even one given up on after TALKIES_LOAD_TIMEOUT, until its thread really ends) and an
  unload in flight count as resident for max_loaded_models and the memory budget.
- One load per model at a time; its failure or timeout answers all of its waiters at once, with the
  reason; the next load starts after a short back-off, for whoever is waiting then.
- A victim is marked (`evicting`: no new turns) and unloaded by the owner once it drains; requests for
  other models never wait for it. Idle models go first; a busy one only after TALKIES_SWAP_MAX_WAIT
  (swap fairness), and never while a call runs in it.
- An engine that crashed, timed out or says it is not `alive` is retired: the model is absent at once
  (its waiters load it again) and what is left of the engine is stopped once its last call returns.
"""

from __future__ import annotations

import asyncio
import copy
import functools
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

import anyio

from talkies.engines.base import Engine
from talkies.errors import ShuttingDownError
from talkies.pool.loads import EngineLoads
from talkies.pool.residency import Residency
from talkies.pool.slot import PoolEvents, Slot, Waiter
from talkies.settings import Settings

log = logging.getLogger("talkies.pool")

LOAD_RETRY_BACKOFF = 0.5
"""Seconds after a failed or timed-out load before the next one starts (waiters queue meanwhile)."""

Event = Callable[[], None]


@dataclass(eq=False)
class Retired:
    """An engine dropped under its requests: stopped once the calls still inside it have returned."""

    slot: Slot
    engine: Engine
    calls: int


class Scheduler:
    def __init__(
        self,
        slots: dict[str, Slot],
        residency: Residency,
        loads: EngineLoads,
        settings: Settings,
        clock: Callable[[], float],
        events: Callable[[], PoolEvents],
    ) -> None:
        self.slots = slots
        self.residency = residency
        self.loads = loads
        self.settings = settings
        self._clock = clock  # the pool clock: last_used and the TTL
        self._events = events
        self._loop: asyncio.AbstractEventLoop | None = None
        self._inbox: asyncio.Queue[Event] = asyncio.Queue()
        self._task: asyncio.Task[None] | None = None
        self._work: set[asyncio.Task[None]] = set()  # loads, unloads, measurements in threads
        self._retired: list[Retired] = []
        self._wake: float | None = None
        self._refreshing = False
        self._refreshed_at = float("-inf")
        self.closing = False
        self._quiet: list[asyncio.Future[None]] = []

    # --- the request side: post an event, await a future ------------------------------------------

    def post(self, event: Event) -> None:
        loop = asyncio.get_running_loop()
        if self._loop is not loop:  # a pool used from another event loop (tests): a fresh owner
            self._loop, self._inbox, self._task = loop, asyncio.Queue(), None
        if self._task is None or self._task.done():  # the first event, or one after shutdown's stop:
            self._task = loop.create_task(self._run(), name="talkies-scheduler")  # events kept, answered
        self._inbox.put_nowait(event)

    def request_turn(self, slot: Slot) -> Waiter:
        now = asyncio.get_running_loop().time()
        limit = self.settings.queue_timeout
        waiter = Waiter(asyncio.get_running_loop().create_future(), now, now + limit, limit)
        self.post(functools.partial(self._arrive, slot, waiter))
        return waiter

    def abandon(self, slot: Slot, waiter: Waiter) -> None:
        """The request went away while waiting: take it out of the queue, or return a turn just granted."""
        future = waiter.future
        if future.done() and not future.cancelled():
            if future.exception() is None:
                self.release(slot, future.result(), None)
            return
        future.cancel()
        self.post(functools.partial(self._withdraw, slot, waiter))

    def release(self, slot: Slot, engine: Engine, cause: str | None) -> asyncio.Future[None]:
        """A turn ends; `cause` ("crash", "timeout") when the engine failed under it. The future is
        answered once the owner has taken it back (a crashed model is marked unloaded by then)."""
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        when = self._clock()

        def release() -> None:
            try:
                self._release(slot, engine, cause, when)
            finally:
                if not done.done():
                    done.set_result(None)

        self.post(release)
        return done

    def ask(self, event: Callable[[asyncio.Future[object]], None]) -> asyncio.Future[object]:
        """Run `event(answer)` in the owner; the future it answers."""
        answer: asyncio.Future[object] = asyncio.get_running_loop().create_future()
        self.post(functools.partial(event, answer))
        return answer

    # --- the owner ---------------------------------------------------------------------------------

    async def _run(self) -> None:
        inbox = self._inbox
        loop = asyncio.get_running_loop()
        while True:
            events: list[Event] = []
            try:
                delay = None if self._wake is None else max(0.0, self._wake - loop.time())
                async with asyncio.timeout(delay):
                    events.append(await inbox.get())
            except TimeoutError:
                pass
            while not inbox.empty():
                events.append(inbox.get_nowait())
            for event in events:
                try:
                    event()
                except Exception:
                    log.exception("pool scheduler: an event failed")
            try:
                self._reconcile()
            except Exception:
                log.exception("pool scheduler: reconciling failed")

    def _spawn(
        self, work: Callable[[], object], done: Callable[[object, BaseException | None], None]
    ) -> None:
        """Run `work` in a worker thread; `done(result, error)` runs in the owner when the thread ends."""

        async def run() -> None:
            result: object = None
            error: BaseException | None = None
            try:
                result = await anyio.to_thread.run_sync(work)
            except Exception as exc:
                error = exc
            self.post(functools.partial(done, result, error))

        task = asyncio.get_running_loop().create_task(run())
        self._work.add(task)
        task.add_done_callback(self._work.discard)

    def _wake_at(self, when: float) -> None:
        self._wake = when if self._wake is None else min(self._wake, when)

    # --- events ------------------------------------------------------------------------------------

    def _arrive(self, slot: Slot, waiter: Waiter) -> None:
        if not waiter.live:
            return
        if self.closing:
            waiter.future.set_exception(ShuttingDownError("the server is shutting down; retry elsewhere"))
            return
        if slot.state == "loading" and not slot.load_abandoned:
            waiter.deadline = None  # its own model's load is not queue time
        waiter.pinned = slot.state == "resident" and not slot.evicting
        slot.queue.append(waiter)

    def _withdraw(self, slot: Slot, waiter: Waiter) -> None:
        if waiter in slot.queue:
            slot.queue.remove(waiter)

    def _release(self, slot: Slot, engine: Engine, cause: str | None, when: float) -> None:
        slot.last_used = max(slot.last_used, when)
        if slot.engine is engine and slot.state == "resident":
            slot.running -= 1
            if cause is not None:
                self._drop(slot, cause)
            return
        for retired in self._retired:
            if retired.engine is engine:
                retired.calls -= 1
                if retired.calls == 0:
                    self._retired.remove(retired)
                    self._stop_retired(retired)
                return
        log.error("pool scheduler: a turn on %s was returned twice", slot.spec.slug)

    def _drop(self, slot: Slot, cause: str) -> None:
        """The engine failed (crash, timeout, exited): the model is absent now; its waiters reload it."""
        engine = slot.engine
        assert engine is not None
        self._events().engine_failed(slot.spec.slug, cause)
        log.error(
            "model %s: engine %s; marked unloaded, the next request loads it again", slot.spec.slug, cause
        )
        retired = Retired(slot, engine, slot.running)
        slot.engine, slot.running, slot.state, slot.evicting = None, 0, "absent", False
        for waiter in slot.queue:
            waiter.pinned = False
        self._answer_unloaded(slot)
        if retired.calls:
            self._retired.append(retired)
        else:
            self._stop_retired(retired)

    def _stop_retired(self, retired: Retired) -> None:
        slug = retired.slot.spec.slug
        self._spawn(functools.partial(self.loads.unload_blocking, retired.engine, slug), lambda *_: None)

    def _exited(self, slot: Slot, engine: Engine, code: int) -> None:
        if slot.engine is engine and slot.state == "resident":
            slot.exited = f"exited on its own (code {code}); the next request starts it again"
            log.error("model %s: %s", slot.spec.slug, slot.exited)
            self._drop(slot, "exited")

    # --- loads and unloads -------------------------------------------------------------------------

    def _start_load(self, slot: Slot, now: float) -> None:
        slug = slot.spec.slug
        engine = self.loads.make(slot.spec)
        log.info("loading %s (executor %s)", slug, slot.spec.executor)
        slot.state, slot.load_abandoned, slot.load_started = "loading", False, now
        self._wake_at(now + self.settings.load_timeout)
        for waiter in slot.queue:
            if waiter.live and waiter.deadline is not None:
                waiter.left, waiter.deadline = max(0.0, waiter.deadline - now), None
        started = time.monotonic()
        self._spawn(
            functools.partial(self.loads.load_blocking, engine, slug),
            lambda figure, error: self._load_ended(slot, engine, started, figure, error),
        )

    def _load_ended(
        self, slot: Slot, engine: Engine, started: float, figure: object, error: BaseException | None
    ) -> None:
        now = asyncio.get_running_loop().time()
        if slot.load_abandoned or self.closing:
            if error is None:  # a load given up on finished after all: it goes now, in a thread
                slot.engine = engine
                self._start_unload(slot)
            else:
                slot.state = "absent"
            self._resume_clocks(slot, now)
            return
        if error is not None:
            slot.state = "absent"
            slot.load_error = getattr(error, "message", None) or f"{type(error).__name__}: {error}"
            log.error("model %s failed to load: %s", slot.spec.slug, slot.load_error)
            self._fail_waiters(slot, error)
            self._events().load_failed(slot.spec.slug, error)
            slot.retry_at = now + LOAD_RETRY_BACKOFF
            return
        if isinstance(figure, int):
            self.loads.memory.measured[slot.spec.slug] = figure
        slot.engine, slot.state, slot.running, slot.evicting = engine, "resident", 0, False
        slot.load_error = slot.unload_error = slot.exited = None
        slot.loaded_at = slot.last_used = self._clock()
        slot.resident_since = now
        self._resume_clocks(slot, now)
        for waiter in slot.queue:
            waiter.pinned = True  # they asked for this load: served before any eviction
        loop = asyncio.get_running_loop()

        def exited(code: int) -> None:  # from the engine's own thread
            loop.call_soon_threadsafe(self.post, functools.partial(self._exited, slot, engine, code))

        self.loads.listen_for_exit(engine, exited)
        seconds = time.monotonic() - started
        log.info("loaded %s in %.2fs", slot.spec.slug, seconds)
        self._events().loaded(slot.spec.slug, seconds)
        for victim in self.residency.overshoot(slot):
            self._mark(victim, f"to fit the memory budget after {slot.spec.slug} loaded")

    def _resume_clocks(self, slot: Slot, now: float) -> None:
        for waiter in slot.queue:
            if waiter.deadline is None:
                waiter.deadline = now + waiter.left

    def _start_unload(self, slot: Slot) -> None:
        engine, slot.engine = slot.engine, None
        assert engine is not None
        slot.state, slot.evicting = "unloading", False
        self._spawn(
            functools.partial(self.loads.unload_blocking, engine, slot.spec.slug),
            lambda error, _: self._unload_ended(slot, error),
        )

    def _unload_ended(self, slot: Slot, error: object) -> None:
        slot.state = "absent"
        slot.unload_error = error if isinstance(error, str) else None
        log.info("unloaded %s", slot.spec.slug)
        self._events().unloaded(slot.spec.slug)
        for waiter in slot.queue:
            waiter.pinned = False
        self._answer_unloaded(slot)

    def _answer_unloaded(self, slot: Slot) -> None:
        done, slot.unload_done = slot.unload_done, []
        for future in done:
            if not future.done():
                future.set_result(None)

    def _fail_waiters(self, slot: Slot, error: BaseException) -> None:
        for waiter in slot.queue:
            if waiter.live:
                waiter.future.set_exception(copy.copy(error))
        slot.queue.clear()

    def _mark(self, victim: Slot, why: str, *, eviction: bool = True) -> None:
        """No new turns for `victim`; it unloads once drained. `eviction`: counted as one (room for
        another model), not an unload asked for or a TTL."""
        if not victim.evicting:
            log.info("evicting %s %s" if eviction else "unloading %s %s", victim.spec.slug, why)
            if eviction:
                self._events().evicted(victim.spec.slug)
            victim.evicting = True

    def _reconcile(self) -> None:
        raise NotImplementedError  # talkies.pool.owner decides
