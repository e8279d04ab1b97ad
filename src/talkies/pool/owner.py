"""The decisions of the pool's owner (talkies.pool.scheduler): after every batch of events, one pass over
the slots grants turns, times out waiters and loads, makes room and starts loads and unloads; and the
commands that change residency from outside (unload, sweep, shutdown), each answered by a future."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
from collections.abc import Callable

from talkies.errors import LoadTimeoutError, ModelTooLargeError, QueueTimeoutError, ShuttingDownError
from talkies.pool.scheduler import LOAD_RETRY_BACKOFF, Scheduler
from talkies.pool.slot import Slot, alive
from talkies.registry import ModelSpec

log = logging.getLogger("talkies.pool")


class Owner(Scheduler):
    def _reconcile(self) -> None:
        loop = asyncio.get_running_loop()
        now = loop.time()
        self._wake = None
        for slot in self.slots.values():
            self._expire(slot, now)
            if slot.loaded and not alive(slot.engine):
                self._drop(slot, "crash")
            if slot.loaded:
                self._grant(slot)
        if not self.closing:
            wanting = [s for s in self.slots.values() if s.state == "absent" and s.waiting]
            wanting.sort(key=lambda s: min(w.since for w in s.queue if w.live))
            for slot in wanting:
                self._place(slot, now)
        for slot in self.slots.values():
            if slot.loaded and slot.evicting and slot.drained:
                self._start_unload(slot)
        if self.closing and self._quiescent():
            self._answer_quiet()

    def _expire(self, slot: Slot, now: float) -> None:
        """Drop waiters that left; answer those whose queue clock ran out; give up on a load too long."""
        for waiter in list(slot.queue):
            if not waiter.live:
                slot.queue.remove(waiter)
            elif waiter.deadline is not None and waiter.deadline <= now:
                slot.queue.remove(waiter)
                self._events().queue_timed_out(slot.spec.slug)
                waiter.future.set_exception(
                    QueueTimeoutError(
                        f"model {slot.spec.slug!r}: waited {self.settings.queue_timeout:g}s in the queue "
                        "without a turn (TALKIES_QUEUE_TIMEOUT)"
                    )
                )
            elif waiter.deadline is not None:
                self._wake_at(waiter.deadline)
        if slot.state == "loading" and not slot.load_abandoned:
            limit = self.settings.load_timeout
            if now >= slot.load_started + limit:
                slot.load_abandoned = True  # still the model's load until its thread really ends
                slot.load_error = f"load timed out after {limit:g}s (TALKIES_LOAD_TIMEOUT)"
                log.error("model %s: %s", slot.spec.slug, slot.load_error)
                error = LoadTimeoutError(f"model {slot.spec.slug!r}: {slot.load_error}")
                self._events().load_failed(slot.spec.slug, error)
                self._fail_waiters(slot, error)
                slot.retry_at = now + LOAD_RETRY_BACKOFF
            else:
                self._wake_at(slot.load_started + limit)

    def _grant(self, slot: Slot) -> None:
        """Turns on a resident model, in arrival order: a marked one serves only the requests that pinned
        it before it was marked."""
        if self.closing:
            return
        limit = slot.spec.max_concurrency
        for waiter in list(slot.queue):
            if slot.running >= limit:
                break
            if not waiter.live or (slot.evicting and not waiter.pinned):
                continue
            slot.queue.remove(waiter)
            slot.running += 1
            slot.last_used = self._clock()
            waiter.future.set_result(slot.engine)  # type: ignore[arg-type]

    def _place(self, slot: Slot, now: float) -> None:
        """`slot` has waiters and is absent: load it if it fits, else mark what must go for it."""
        if now < slot.retry_at:
            self._wake_at(slot.retry_at)
            return
        if self.loads.memory.budget is not None and now - self._refreshed_at > 1.0 and self._workers():
            self._refresh_footprints(now)
            return
        if self._refreshing:
            return
        try:
            victims = self.residency.victims_for(slot)
            victims += self.residency.memory_victims(slot, victims)
        except ModelTooLargeError as exc:
            self._fail_waiters(slot, exc)
            return
        if not victims:
            self._start_load(slot, now)
            return
        since = min(w.since for w in slot.queue if w.live)
        for victim in victims:
            if not victim.loaded or victim.evicting:
                continue  # loading, unloading or marked already: wait for it
            if not victim.busy:
                self._mark(victim, f"to make room for {slot.spec.slug}")
                continue
            until = max(since, victim.resident_since) + self.settings.swap_max_wait
            if now >= until:
                self._mark(victim, f"to make room for {slot.spec.slug} (it waited TALKIES_SWAP_MAX_WAIT)")
            else:
                self._wake_at(until)

    def _workers(self) -> bool:
        """Some resident model runs in a worker process (whose footprint grows with use)."""
        return any(getattr(s.engine, "worker_pid", None) is not None for s in self.slots.values() if s.loaded)

    def _refresh_footprints(self, now: float) -> None:
        """Worker engines grow after their first requests: measure the resident ones again (a thread)."""
        if self._refreshing:
            return
        self._refreshing = True

        def done(_: object, error: BaseException | None) -> None:
            self._refreshing = False
            self._refreshed_at = asyncio.get_running_loop().time()
            if error is not None:
                log.warning("measuring the resident models failed: %s", error)

        self._spawn(self.residency.refresh_footprints, done)

    # --- commands from outside ---------------------------------------------------------------------

    def evict(self, slots: list[Slot], answer: asyncio.Future[object]) -> None:
        """Mark `slots` (an unload, an unload of all); `answer` gets the futures of their unloads."""
        futures: list[asyncio.Future[None]] = []
        for slot in slots:
            if slot.state in ("resident", "unloading"):
                future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
                slot.unload_done.append(future)
                futures.append(future)
                if slot.loaded:
                    self._mark(slot, "on request", eviction=False)
        answer.set_result(futures)

    def sweep(self, ttl: Callable[[ModelSpec], float], answer: asyncio.Future[object]) -> None:
        """Mark every model idle for at least its ttl, decided and marked in one step (a request that
        pinned one meanwhile keeps it). `answer` gets (slugs, futures of their unloads)."""
        now = self._clock()
        idle = [
            s
            for s in self.slots.values()
            if s.loaded and not s.evicting and not s.busy and 0 < ttl(s.spec) <= now - s.last_used
        ]
        if idle:
            log.info("sweeper: unloading idle %s", ", ".join(s.spec.slug for s in idle))
        futures: list[asyncio.Future[None]] = []
        for slot in idle:
            future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
            slot.unload_done.append(future)
            futures.append(future)
            self._mark(slot, "after its ttl", eviction=False)
        answer.set_result(([s.spec.slug for s in idle], futures))

    def begin_close(self, answer: asyncio.Future[object]) -> None:
        """Shutdown: waiters are answered, nothing new is granted or loaded, every model is marked and
        unloaded as it drains. `answer` is set once nothing is resident, loading or running."""
        self.closing = True
        for slot in self.slots.values():
            for waiter in slot.queue:
                if waiter.live:
                    waiter.future.set_exception(ShuttingDownError("the server is shutting down"))
            slot.queue.clear()
            if slot.loaded:
                slot.evicting = True
        self._quiet.append(answer)  # type: ignore[arg-type]

    def kill_stragglers(self, answer: asyncio.Future[object]) -> None:
        """After the bounded wait at shutdown: kill the workers of engines with calls still inside; an
        in-process engine with a call inside is left alone (never unloaded under a running call)."""
        left: list[str] = []
        engines = [(s, s.engine) for s in self.slots.values() if s.loaded and s.running]
        engines += [(r.slot, r.engine) for r in self._retired]
        for slot, engine in engines:
            kill = getattr(engine, "kill", None)
            if callable(kill):
                log.warning(
                    "model %s: a call is still running at shutdown; killing its worker", slot.spec.slug
                )
                self._spawn(functools.partial(kill, "the server is shutting down"), lambda *_: None)
            else:
                left.append(slot.spec.slug)
        answer.set_result(left)

    def _quiescent(self) -> bool:
        return not self._retired and all(s.state == "absent" for s in self.slots.values())

    def _answer_quiet(self) -> None:
        quiet, self._quiet = self._quiet, []
        for future in quiet:
            if not future.done():
                future.set_result(None)

    async def stop(self) -> None:
        """End the owner task (after shutdown)."""
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def drain_work(self, limit: float) -> None:
        """Wait (at most `limit` seconds) for the loads, unloads and kills in worker threads to end."""
        work = list(self._work)
        if work:
            await asyncio.wait(work, timeout=limit)
