"""Cross-request batching: the work units of concurrent requests for one model share one engine call.

One `Batcher` per loaded model lives beside its engine (in the worker process when the engine is
isolated, in the server process otherwise). Request threads `submit` their units (Whisper: the 30 s
windows left after VAD) under a *key*: units whose decoding options cannot share a call get different
keys and are never mixed. One owner thread holds every pending unit; it closes a batch for a key when
`max_batch_size` units wait (reason "full") or `max_wait_s` after the oldest of them arrived ("timer"),
calls `run_batch(key, units)` once, and answers each unit's future with its own result.

Callers never touch the pending state: they post events (submit, cancel) to the owner's queue and wait
on futures, so a request that goes away (`Ticket.cancel`) only drops its units that still wait; units
already inside a running batch finish and their results are discarded. A batch that raises fails only
the units in it, each with that exception.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable, Generator, Hashable, Sequence
from concurrent.futures import CancelledError, Future
from dataclasses import dataclass, field
from typing import Generic, Literal, TypeVar, cast

from talkies.engines.base import CallCancelled, call_abandoned

log = logging.getLogger(__name__)

K = TypeVar("K", bound=Hashable)
U = TypeVar("U")
R = TypeVar("R")

_POLL_S = 0.05  # how often a waiting request checks whether it was abandoned


@dataclass(frozen=True, slots=True)
class BatchRecord:
    """One closed batch: how many units it held, why it closed, how long its oldest unit waited."""

    size: int
    reason: Literal["full", "timer"]
    wait_s: float


class BatchStats:
    """Running totals of one model's batches, for /metrics: written by the batcher's owner thread,
    read (as a copy) by the metrics collector."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._sizes: dict[int, int] = {}
        self._wait_s = 0.0
        self._timer_closed = 0

    def record(self, record: BatchRecord) -> None:
        with self._lock:
            self._sizes[record.size] = self._sizes.get(record.size, 0) + 1
            self._wait_s += record.wait_s
            self._timer_closed += record.reason == "timer"

    def snapshot(self) -> tuple[dict[int, int], float, int]:
        """(batches by size, total seconds the oldest unit of each batch waited, batches closed by timer)."""
        with self._lock:
            return dict(self._sizes), self._wait_s, self._timer_closed


@dataclass(slots=True)
class _Unit(Generic[U, R]):
    ticket: Ticket[R]
    payload: U
    future: Future[R]
    arrived: float


@dataclass(slots=True)
class Ticket(Generic[R]):
    """A request's units in the batcher: their futures in submission order."""

    futures: list[Future[R]]
    _cancel: Callable[[Ticket[R]], None] = field(repr=False)

    def results(self) -> Generator[R, None, None]:
        """Each unit's result in order, as its batch finishes. Between polls it checks whether the request
        was abandoned, so it stops waiting (and cancels its pending units). Waiting is not progress: a batch
        that hangs still trips the worker's TALKIES_ENGINE_TIMEOUT for the requests in it."""
        try:
            for future in self.futures:
                while True:
                    try:
                        yield future.result(timeout=_POLL_S)
                        break
                    except TimeoutError:
                        if call_abandoned():
                            raise CallCancelled("the request was abandoned") from None
        except BaseException:
            self.cancel()
            raise

    def cancel(self) -> None:
        """Drop this request's units that still wait; a batch already running is left alone."""
        self._cancel(self)


class Batcher(Generic[K, U, R]):
    """Collects units of concurrent requests into calls of `run_batch` (see the module docstring)."""

    def __init__(
        self,
        name: str,
        run_batch: Callable[[K, list[U]], Sequence[R]],
        *,
        max_batch_size: int,
        max_wait_s: float,
        on_batch: Callable[[BatchRecord], None] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if max_batch_size < 1 or max_wait_s < 0:
            raise ValueError("max_batch_size must be >= 1 and max_wait_s >= 0")
        self.name = name
        self.max_batch_size = max_batch_size
        self.max_wait_s = max_wait_s
        self._run_batch = run_batch
        self._on_batch = on_batch
        self._clock = clock
        self._events: queue.SimpleQueue[tuple[str, object]] = queue.SimpleQueue()
        self._start_lock = threading.Lock()  # guards only the lazy start of the owner thread
        self._thread: threading.Thread | None = None
        # owner-thread state (never touched by callers)
        self._pending: dict[K, list[_Unit[U, R]]] = {}

    # --- caller side ---------------------------------------------------------------------------------

    def submit(self, key: K, payloads: Sequence[U]) -> Ticket[R]:
        """Queue `payloads` under `key`; their results come back through the ticket's futures."""
        ticket: Ticket[R] = Ticket([Future() for _ in payloads], self._post_cancel)
        if payloads:
            self._ensure_owner()
            self._events.put(("submit", (key, ticket, list(payloads))))
        return ticket

    def close(self) -> None:
        """Stop the owner thread; units still pending are cancelled."""
        with self._start_lock:
            thread, self._thread = self._thread, None
        if thread is not None:
            self._events.put(("close", None))
            thread.join()

    def _post_cancel(self, ticket: Ticket[R]) -> None:
        self._events.put(("cancel", ticket))

    def _ensure_owner(self) -> None:
        with self._start_lock:
            if self._thread is None:
                self._thread = threading.Thread(target=self._own, name=f"batcher-{self.name}", daemon=True)
                self._thread.start()

    # --- owner side ----------------------------------------------------------------------------------

    def _own(self) -> None:
        while True:
            timeout = self._next_deadline()
            try:
                event = self._events.get(timeout=timeout) if timeout != 0 else self._events.get_nowait()
            except queue.Empty:
                event = None
            while event is not None:  # take every event already posted before closing a batch
                if not self._handle(event):
                    return
                try:
                    event = self._events.get_nowait()
                except queue.Empty:
                    event = None
            self._run_ready()

    def _handle(self, event: tuple[str, object]) -> bool:
        kind, body = event
        if kind == "close":
            for units in self._pending.values():
                for unit in units:
                    unit.future.set_exception(CancelledError("the model was unloaded"))
            self._pending.clear()
            return False
        if kind == "submit":
            key, ticket, payloads = cast("tuple[K, Ticket[R], list[U]]", body)
            now = self._clock()
            group = self._pending.setdefault(key, [])
            for payload, future in zip(payloads, ticket.futures, strict=True):
                if future.set_running_or_notify_cancel():
                    group.append(_Unit(ticket, payload, future, now))
        elif kind == "cancel":
            for key in list(self._pending):
                kept = [u for u in self._pending[key] if u.ticket is not body]
                for unit in self._pending[key]:
                    if unit.ticket is body:
                        unit.future.set_exception(CancelledError("the request was abandoned"))
                if kept:
                    self._pending[key] = kept
                else:
                    del self._pending[key]
        return True

    def _next_deadline(self) -> float | None:
        """Seconds until the oldest pending group must close; None: nothing pending (wait forever)."""
        if not self._pending:
            return None
        if any(len(units) >= self.max_batch_size for units in self._pending.values()):
            return 0
        oldest = min(units[0].arrived for units in self._pending.values())
        return max(0.0, oldest + self.max_wait_s - self._clock())

    def _run_ready(self) -> None:
        while self._pending:
            now = self._clock()
            ready = [
                key
                for key, units in self._pending.items()
                if len(units) >= self.max_batch_size or now >= units[0].arrived + self.max_wait_s
            ]
            if not ready:
                return
            key = min(ready, key=lambda k: self._pending[k][0].arrived)  # oldest first: no starvation
            units = self._pending[key]
            batch, rest = units[: self.max_batch_size], units[self.max_batch_size :]
            if rest:
                self._pending[key] = rest
            else:
                del self._pending[key]
            reason: Literal["full", "timer"] = "full" if len(batch) == self.max_batch_size else "timer"
            self._run(key, batch, BatchRecord(len(batch), reason, now - batch[0].arrived))

    def _run(self, key: K, batch: list[_Unit[U, R]], record: BatchRecord) -> None:
        if self._on_batch is not None:
            self._on_batch(record)
        try:
            results = self._run_batch(key, [unit.payload for unit in batch])
            if len(results) != len(batch):
                raise RuntimeError(f"batch of {len(batch)} units returned {len(results)} results")
        except BaseException as exc:  # one batch's failure is its requests' error, never the owner's
            log.debug("%s: batch of %d failed: %r", self.name, len(batch), exc)
            for unit in batch:
                unit.future.set_exception(exc)
            if not isinstance(exc, Exception):
                raise
            return
        for unit, result in zip(batch, results, strict=True):
            unit.future.set_result(result)
