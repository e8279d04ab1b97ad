"""The model pool: loads models on demand, keeps them resident by policy, and never frees one in use.

    async with pool.acquire("whisper-large-v3") as engine:
        result = await anyio.to_thread.run_sync(engine.transcribe, request)

- A model loads exactly once however many first requests arrive together (one residency lock, FIFO). The
  load is a task of the model's own, shared by every waiter and shielded from any one waiter's
  cancellation: a client that hangs up during a slow load never makes the next waiter start a second one.
- A request holds its concurrency permit until the engine really stopped working for it (services run
  engine calls as `BlockingSteps`, which wait for the call to return before a cancellation goes on).
- A worker crash or engine timeout drops the model: every request on it releases its permit, and a
  request that was waiting for a permit loads the model again (or answers the load's clear error).
- A request holds a *pin* from the moment its model is resident until it leaves `acquire`; eviction waits
  until a model has no pins. While a model is marked for eviction, new requests for it wait behind the
  lock instead of pinning it again, so the model that asked for the room gets it (no starvation).
- Residency: models stay resident while their footprints fit the memory budget (TALKIES_MEMORY_BUDGET;
  measured after load, estimated from the snapshot before the first), up to `max_loaded_models`. A load
  that does not fit evicts least recently used models, idle ones first (talkies.pool.residency chooses
  which); a model that can never fit
  answers ModelTooLargeError (507) with the figures. Registry `groups` keep their meaning (talkies.registry
  .groups); slugs sharing one copy of weights neither count nor evict each other.
- Swap fairness: a load that needs the room of a model in use waits while that model serves its queue
  (its requests keep arriving and its waiters pin it first), for at most TALKIES_SWAP_MAX_WAIT past the
  waiting model's first request or the resident's load; then the resident takes no new requests and goes
  once its pinned ones are done. Requests for the waiting model accumulate meanwhile and all pin it once
  it is loaded, so alternating traffic swaps once per batch instead of once per request.
- Concurrency: `max_concurrency` requests run at once per model; up to `max_queue` more wait, one more
  answers 429 (`check_queue`, which services call as soon as the model is known: admission first); a
  request waiting longer than `queue_timeout` answers 503. Cancelling a waiting request (a client that
  went away) takes it out of the queue.
- The clock is injected so the idle sweeper is tested without sleeping.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import anyio

from talkies.engines import create_engine, unavailable_reason
from talkies.engines.base import Engine, EngineContext, Modality
from talkies.errors import (
    EngineTimeoutError,
    EngineUnavailableError,
    ModelLoadError,
    ModelNotFoundError,
    ModelNotLoadedError,
    QueueFullError,
    QueueTimeoutError,
    WorkerCrashedError,
)
from talkies.memory import MemoryBudget, resolve_budget
from talkies.pool.loads import EngineLoads
from talkies.pool.residency import Residency
from talkies.pool.slot import PoolEvents, Slot, alive
from talkies.registry import ModelSpec, Registry
from talkies.registry.groups import GroupRules
from talkies.settings import Settings

log = logging.getLogger("talkies.pool")  # the name operators filter on, kept when pool became a package

EngineFactory = Callable[[ModelSpec, EngineContext], Engine]
Clock = Callable[[], float]


class ModelPool:
    def __init__(
        self,
        registry: Registry,
        settings: Settings,
        *,
        device: str = "cpu",
        engine_factory: EngineFactory | None = None,
        clock: Clock = time.monotonic,
    ) -> None:
        self.registry = registry
        self.settings = settings
        self.device = device
        self._clock = clock
        self._lock = asyncio.Lock()
        self._slots = {
            slug: Slot(spec=spec, semaphore=asyncio.Semaphore(spec.max_concurrency))
            for slug, spec in registry.models.items()
        }
        for slot in self._slots.values():
            slot.drained.set()
        self._sweeper: asyncio.Task[None] | None = None
        self.group_rules = GroupRules(registry.group_specs)
        self.events = PoolEvents()
        self.memory = MemoryBudget(resolve_budget(settings.memory_budget, device), device)
        factory = engine_factory or create_engine
        self.loads = EngineLoads(
            lambda spec: factory(spec, self.engine_context(spec)),
            settings,
            self.memory,
            clock,
            lambda: self.events,
        )
        self.residency = Residency(registry, settings, self.group_rules, self.memory, self._slots)
        self._changed = asyncio.Event()  # set (and replaced) whenever pins, waiters or residency change

    # --- lookup --------------------------------------------------------------------------------------

    def spec(self, slug: str, *, kind: Modality | None = None) -> ModelSpec:
        """The enabled model called `slug` (a slug or an alias). An empty name with `kind` given is that
        modality's default model (Open WebUI sends an empty `model`)."""
        if not slug.strip() and kind is not None:
            default = self.registry.default(kind)
            if default is None:
                raise ModelNotFoundError(f"no model given and no {kind} model is enabled", param="model")
            return default
        spec = self.registry.get(slug)
        if spec is None:
            raise ModelNotFoundError(
                f"model {slug!r} not found; available models: {', '.join(self.registry.models)}",
                param="model",
            )
        return spec

    def unavailable_reason(self, slug: str) -> str | None:
        return unavailable_reason(self.spec(slug), self.device)

    def is_loaded(self, slug: str) -> bool:
        slot = self._slots.get(self.registry.resolve(slug) or slug)
        return slot is not None and slot.loaded

    def peek_engine(self, slug: str) -> Engine | None:
        """The loaded engine for `slug`, without pinning it (for read-only introspection)."""
        slot = self._slots.get(slug)
        return slot.engine if slot else None

    def engine_context(self, spec: ModelSpec) -> EngineContext:
        options: dict[str, object] = {
            "batch_size": self.settings.whisper_batch_size,
            "nemo_batch_size": self.settings.nemo_batch_size,
            "batching": self.settings.batching,
        }
        if spec.compute_type:
            options["compute_type"] = spec.compute_type
        if spec.executor == "qwen3_tts":
            options["qwen3_voices_dir"] = str(self.settings.qwen3_voices_path)
            options["custom_voices_dir"] = str(self.settings.custom_voices_dir)
        if self.registry.start_port is not None:
            options["start_port"] = self.registry.start_port
        return EngineContext(
            slug=spec.slug,
            model_dir=self.settings.models_dir / spec.slug,
            device=self.device,
            cpu_threads=self.settings.cpu_threads,
            options=options,
        )

    # --- acquire -------------------------------------------------------------------------------------

    def check_queue(self, slug: str) -> None:
        """Admission: raise `QueueFullError` (429 with Retry-After) when a request for `slug` would find
        its queue full. `acquire` checks this too; services call it as soon as the model is known, so
        a refused request is not decoded (or stored) first. A request admitted here can still be
        refused by `acquire` if the queue filled meanwhile."""
        spec = self.spec(slug)
        slot = self._slots[spec.slug]
        limit = spec.max_queue if spec.max_queue is not None else self.settings.max_queue
        if slot.waiting >= limit + max(0, spec.max_concurrency - slot.running):
            raise QueueFullError(
                f"model {spec.slug!r} is busy: {slot.waiting} requests already waiting "
                f"(limit {limit}, TALKIES_MAX_QUEUE); retry later",
                retry_after=slot.retry_after(),
            )

    @contextlib.asynccontextmanager
    async def acquire(self, slug: str) -> AsyncIterator[Engine]:
        spec = self.spec(slug)
        slug = spec.slug  # an alias pins the model it names
        reason = unavailable_reason(spec, self.device)
        if reason:
            raise EngineUnavailableError(f"model {slug!r} is unavailable: {reason}")
        self.check_queue(slug)
        slot = self._slots[slug]
        slot.waiting += 1
        pinned = False
        started = False
        try:
            try:
                async with asyncio.timeout(self.settings.queue_timeout) as clock:
                    slot.start_queue_clock(clock)
                    try:
                        await self._pin(slot)
                        pinned = True
                        await slot.semaphore.acquire()
                    finally:
                        del slot.queue_clocks[clock]
            except TimeoutError:
                self.events.queue_timed_out(slug)
                raise QueueTimeoutError(
                    f"model {slug!r}: waited {self.settings.queue_timeout:g}s in the queue without a turn "
                    "(TALKIES_QUEUE_TIMEOUT)"
                ) from None
            slot.waiting -= 1
            started = True
            slot.running += 1
            try:
                engine = slot.engine
                if engine is None:  # it crashed or timed out while this request waited: load it again
                    async with self._lock:
                        await self._ensure_loaded(slot)
                    engine = slot.engine
                    if engine is None:
                        raise ModelLoadError(f"model {slug!r} is not loaded; retry the request")
                try:
                    yield engine
                except (WorkerCrashedError, EngineTimeoutError) as exc:
                    cause = "timeout" if isinstance(exc, EngineTimeoutError) else "crash"
                    await self.loads.drop_crashed(slot, engine, cause)
                    raise
            finally:
                slot.running -= 1
                slot.semaphore.release()
        finally:
            if not started:
                slot.waiting -= 1
            if pinned:
                slot.last_used = self._clock()
                slot.pins -= 1
                if slot.pins == 0:
                    slot.drained.set()
                    self._notify()

    async def _pin(self, slot: Slot) -> None:
        """Make `slot` resident and pin it. Fast path without the lock when it is loaded and staying."""
        if slot.loaded and not slot.evicting and alive(slot.engine):
            slot.add_pin()
            return
        token = object()
        slot.wanting[token] = asyncio.get_running_loop().time()
        try:
            async with self._lock:
                if slot.engine is not None and not alive(slot.engine):
                    await self.loads.drop_crashed(slot, slot.engine)
                await self._ensure_loaded(slot)
                slot.add_pin()
        finally:
            del slot.wanting[token]
            self._notify()

    async def _ensure_loaded(self, slot: Slot) -> None:
        """Under the residency lock: make `slot` resident. The load runs as the slot's own task; a waiter
        cancelled meanwhile leaves it running, and the next waiter awaits the same load. While one request
        makes room for the model, the others for it wait beside it (with the lock released)."""
        loaded_here = False
        while not slot.loaded:
            if slot.load_task is not None:
                await asyncio.shield(slot.load_task)
                continue
            if slot.making_room:
                await self._wait_for_change(None)
                continue
            slot.making_room = True
            try:
                await self._make_room_for(slot)
            finally:
                slot.making_room = False
                self._notify()
            task = asyncio.ensure_future(self.loads.load(slot))
            slot.load_task = task
            task.add_done_callback(functools.partial(self._load_done, slot))
            await asyncio.shield(task)
            loaded_here = True
        if loaded_here:
            await self._fit_after_load(slot)

    def _notify(self) -> None:
        self._changed.set()
        self._changed = asyncio.Event()

    async def _wait_for_change(self, limit: float | None) -> None:
        """Under the residency lock: release it until pins, waiters or residency change (or `limit` seconds
        pass), then take it again, even when cancelled meanwhile (as asyncio.Condition.wait does)."""
        changed = self._changed
        self._lock.release()
        try:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(limit):
                    await changed.wait()
        finally:
            cancelled = False
            while True:
                try:
                    await self._lock.acquire()
                    break
                except asyncio.CancelledError:
                    cancelled = True
            if cancelled:
                raise asyncio.CancelledError

    def _load_done(self, slot: Slot, task: asyncio.Future[None]) -> None:
        if slot.load_task is task:
            slot.load_task = None
        self._notify()
        # The exception is retrieved here: every waiter got it already, or the next one retries.
        if not task.cancelled() and (error := task.exception()) is not None:
            self.events.load_failed(slot.spec.slug, error)

    # --- residency -----------------------------------------------------------------------------------

    async def _make_room_for(self, slot: Slot) -> None:
        """Under the residency lock: evict what `slot` needs gone. A busy victim first serves its queue
        for up to TALKIES_SWAP_MAX_WAIT (swap fairness, see the module docstring)."""
        if self.memory.budget is not None:
            await anyio.to_thread.run_sync(self.residency.refresh_footprints)
        loop = asyncio.get_running_loop()
        since = min(slot.wanting.values(), default=loop.time())
        while True:
            victims = self.residency.victims_for(slot)
            victims += self.residency.memory_victims(slot, victims)
            busy = [v for v in victims if v.pins or v.wanting]
            if not busy:
                break
            held_since = max([since, *(v.resident_since for v in busy)])
            left = held_since + self.settings.swap_max_wait - loop.time()
            if left <= 0:
                break
            log.debug(
                "%s waits up to %.1fs for %s to serve its queue",
                slot.spec.slug,
                left,
                ", ".join(v.spec.slug for v in busy),
            )
            await self._wait_for_change(left)
        await self._evict_now(victims, f"to make room for {slot.spec.slug}")

    async def _evict_now(self, victims: list[Slot], why: str) -> None:
        """Under the residency lock: take no new requests for `victims`, wait for theirs, unload them."""
        for victim in victims:
            victim.evicting = True
        try:
            for victim in victims:
                log.info("evicting %s %s", victim.spec.slug, why)
                self.events.evicted(victim.spec.slug)
                await victim.drained.wait()
                await self.loads.unload(victim)
        finally:
            for victim in victims:
                victim.evicting = False
            self._notify()

    async def _fit_after_load(self, slot: Slot) -> None:
        """Under the residency lock: evict what a load bigger than its estimate pushed over the budget."""
        going = self.residency.overshoot(slot)
        if going:
            await self._evict_now(going, f"to fit the memory budget after {slot.spec.slug} loaded")

    # --- explicit unload, sweeping, preload ------------------------------------------------------------

    async def unload(self, slug: str) -> None:
        """Unload one model, after its in-flight requests finish. 404 when unknown or not loaded."""
        slot = self._slots.get(self.registry.resolve(slug) or slug)
        if slot is None:
            raise ModelNotFoundError(f"model {slug!r} not found", param="model_id")
        if not slot.loaded:
            raise ModelNotLoadedError(f"model {slug!r} is not loaded")
        await self._evict([slot])

    async def unload_all(self) -> list[str]:
        slots = [s for s in self._slots.values() if s.loaded]
        await self._evict(slots)
        return [s.spec.slug for s in slots]

    async def _evict(self, slots: list[Slot]) -> None:
        async with self._lock:
            for slot in slots:
                slot.evicting = True
            try:
                for slot in slots:
                    await slot.drained.wait()
                    await self.loads.unload(slot)
            finally:
                for slot in slots:
                    slot.evicting = False
                self._notify()

    def _ttl(self, spec: ModelSpec) -> float:
        """A registry entry's `ttl` (0 = never), else TALKIES_MODEL_TTL."""
        if spec.ttl is not None and spec.ttl >= 0:
            return float(spec.ttl)
        return self.settings.model_ttl

    async def sweep_once(self) -> list[str]:
        """Unload every model idle for at least its ttl (TALKIES_MODEL_TTL unless the registry entry sets
        `ttl`). Returns the slugs unloaded."""
        now = self._clock()
        idle = [
            s
            for s in self._slots.values()
            if s.loaded and s.pins == 0 and 0 < self._ttl(s.spec) <= now - s.last_used
        ]
        if idle:
            log.info("sweeper: unloading idle %s", ", ".join(s.spec.slug for s in idle))
            await self._evict(idle)
        return [s.spec.slug for s in idle]

    async def preload(self, slugs: tuple[str, ...]) -> None:
        for slug in slugs:
            async with self.acquire(slug):
                pass

    def start_sweeper(self) -> None:
        interval = self.settings.sweeper_interval
        any_ttl = any(self._ttl(s.spec) > 0 for s in self._slots.values())
        if interval > 0 and any_ttl and self._sweeper is None:
            self._sweeper = asyncio.create_task(self._sweep_forever(interval), name="talkies-sweeper")

    async def _sweep_forever(self, interval: float) -> None:
        while True:
            await asyncio.sleep(interval)
            try:
                await self.sweep_once()
            except Exception:
                log.exception("sweeper failed")

    async def close(self) -> None:
        if self._sweeper is not None:
            self._sweeper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._sweeper
            self._sweeper = None
        for slot in self._slots.values():
            if slot.load_task is not None:  # a load whose waiters all left: let it end, then unload it
                with contextlib.suppress(Exception):
                    await slot.load_task
            if slot.loaded:
                await self.loads.unload(slot)

    # --- introspection -------------------------------------------------------------------------------

    def occupancy(self) -> dict[str, tuple[int, int]]:
        """Every enabled model -> (requests running on it, requests waiting for it)."""
        return {slug: (s.running, s.waiting) for slug, s in self._slots.items()}

    def memory_summary(self) -> dict[str, Any]:
        """The budget and what the resident models hold of it (bytes; budget None: no known limit)."""
        resident = [s for s in self._slots.values() if s.loaded]
        return {"budget_bytes": self.memory.budget, "used_bytes": self.residency.used(resident)}

    def failed_loads(self) -> dict[str, str]:
        return {slug: s.load_error for slug, s in self._slots.items() if s.load_error and not s.loaded}

    def ps(self) -> list[dict[str, Any]]:
        now = self._clock()
        rows: list[dict[str, Any]] = []
        for slug, slot in self._slots.items():
            if not (slot.loaded or slot.unload_error or slot.exited):
                continue
            row: dict[str, Any] = {
                "model": slug,
                "modality": slot.spec.kind,
                "executor": slot.spec.executor,
                "loaded": slot.loaded,
                "idle_seconds": round(now - slot.last_used, 3) if slot.loaded else None,
                "in_flight": slot.running,
                "queued": slot.waiting,
                "unload_error": slot.unload_error,
            }
            if slot.exited and not slot.loaded:
                row["exited"] = slot.exited
            footprint, how = self.residency.footprint(slot)
            row["memory_bytes"] = footprint
            row["memory"] = how
            engine = slot.engine
            pid = getattr(engine, "worker_pid", None)
            if pid is not None:
                row["pid"] = pid
                rss = getattr(engine, "worker_rss", None)
                row["rss_bytes"] = rss() if callable(rss) else None
            rows.append(row)
        return rows
