"""The model pool: loads models on demand, keeps them resident by policy, and never frees one in use.

    async with pool.acquire("whisper-large-v3") as engine:
        result = await anyio.to_thread.run_sync(engine.transcribe, request)

- A model loads exactly once however many first requests arrive together (one residency lock, FIFO).
- A request holds a *pin* from the moment its model is resident until it leaves `acquire`; eviction waits
  until a model has no pins. While a model is marked for eviction, new requests for it wait behind the
  lock instead of pinning it again, so the model that asked for the room gets it (no starvation).
- Residency: up to `max_loaded_models` models (least recently used evicted first); registry `groups`
  name models that may stay resident together and do not count against that limit for each other.
- Concurrency: `max_concurrency` requests run at once per model; up to `max_queue` more wait, one more
  answers 429; a request waiting longer than `queue_timeout` answers 503. Cancelling a waiting request
  (a client that went away) takes it out of the queue.
- The clock is injected so the idle sweeper is tested without sleeping.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import math
import sys
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any

import anyio

from talkies.engines import create_engine, unavailable_reason
from talkies.engines.base import Engine, EngineContext
from talkies.errors import (
    EngineUnavailableError,
    LoadTimeoutError,
    ModelLoadError,
    ModelNotFoundError,
    ModelNotLoadedError,
    QueueFullError,
    QueueTimeoutError,
    TalkiesError,
    WorkerCrashedError,
)
from talkies.registry import ModelSpec, Registry
from talkies.settings import Settings

log = logging.getLogger(__name__)

EngineFactory = Callable[[ModelSpec, EngineContext], Engine]
Clock = Callable[[], float]


@dataclass
class _Slot:
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
    drained: asyncio.Event = field(default_factory=asyncio.Event)

    @property
    def loaded(self) -> bool:
        return self.engine is not None


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
        self._factory = engine_factory or create_engine
        self._clock = clock
        self._lock = asyncio.Lock()
        self._slots = {
            slug: _Slot(spec=spec, semaphore=asyncio.Semaphore(spec.max_concurrency))
            for slug, spec in registry.models.items()
        }
        for slot in self._slots.values():
            slot.drained.set()
        self._sweeper: asyncio.Task[None] | None = None

    # --- lookup --------------------------------------------------------------------------------------

    def spec(self, slug: str) -> ModelSpec:
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
        slot = self._slots.get(slug)
        return slot is not None and slot.loaded

    def peek_engine(self, slug: str) -> Engine | None:
        """The loaded engine for `slug`, without pinning it (for read-only introspection)."""
        slot = self._slots.get(slug)
        return slot.engine if slot else None

    def engine_context(self, spec: ModelSpec) -> EngineContext:
        options: dict[str, object] = {"batch_size": self.settings.whisper_batch_size}
        if spec.compute_type:
            options["compute_type"] = spec.compute_type
        return EngineContext(
            slug=spec.slug,
            model_dir=self.settings.models_dir / spec.slug,
            device=self.device,
            cpu_threads=self.settings.cpu_threads,
            options=options,
        )

    # --- acquire -------------------------------------------------------------------------------------

    @contextlib.asynccontextmanager
    async def acquire(self, slug: str) -> AsyncIterator[Engine]:
        spec = self.spec(slug)
        reason = unavailable_reason(spec, self.device)
        if reason:
            raise EngineUnavailableError(f"model {slug!r} is unavailable: {reason}")
        slot = self._slots[slug]
        limit = spec.max_queue if spec.max_queue is not None else self.settings.max_queue
        if slot.waiting >= limit + max(0, spec.max_concurrency - slot.running):
            raise QueueFullError(
                f"model {slug!r} is busy: {slot.waiting} requests already waiting "
                f"(limit {limit}, TALKIES_MAX_QUEUE); retry later",
                retry_after=self._retry_after(slot),
            )
        slot.waiting += 1
        pinned = False
        started = False
        try:
            try:
                async with asyncio.timeout(self.settings.queue_timeout) as clock:
                    self._start_queue_clock(slot, clock)
                    try:
                        await self._pin(slot)
                        pinned = True
                        await slot.semaphore.acquire()
                    finally:
                        del slot.queue_clocks[clock]
            except TimeoutError:
                raise QueueTimeoutError(
                    f"model {slug!r}: waited {self.settings.queue_timeout:g}s in the queue without a turn "
                    "(TALKIES_QUEUE_TIMEOUT)"
                ) from None
            slot.waiting -= 1
            started = True
            slot.running += 1
            engine = slot.engine
            assert engine is not None
            try:
                yield engine
            except WorkerCrashedError:
                await self._drop_crashed(slot, engine)
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

    def _start_queue_clock(self, slot: _Slot, clock: asyncio.Timeout) -> None:
        slot.queue_clocks[clock] = None
        if slot.loading:  # arrived while its model loads: the clock starts when the load ends
            self._pause_queue_clocks(slot)

    def _pause_queue_clocks(self, slot: _Slot) -> None:
        now = asyncio.get_running_loop().time()
        for clock, left in slot.queue_clocks.items():
            when = clock.when()
            if left is None and when is not None:
                slot.queue_clocks[clock] = max(0.0, when - now)
                clock.reschedule(None)

    def _resume_queue_clocks(self, slot: _Slot) -> None:
        now = asyncio.get_running_loop().time()
        for clock, left in slot.queue_clocks.items():
            if left is not None:
                clock.reschedule(now + left)
                slot.queue_clocks[clock] = None

    def _retry_after(self, slot: _Slot) -> int:
        return max(1, min(60, math.ceil(slot.waiting / max(1, slot.spec.max_concurrency))))

    async def _pin(self, slot: _Slot) -> None:
        """Make `slot` resident and pin it. Fast path without the lock when it is loaded and staying."""
        if slot.loaded and not slot.evicting:
            self._add_pin(slot)
            return
        async with self._lock:
            if not slot.loaded:
                await self._make_room_for(slot)
                await self._load(slot)
            self._add_pin(slot)

    def _add_pin(self, slot: _Slot) -> None:
        slot.pins += 1
        slot.drained.clear()

    # --- residency -----------------------------------------------------------------------------------

    def _victims_for(self, slot: _Slot) -> list[_Slot]:
        mates = self.registry.group_mates(slot.spec.slug)
        others = sorted(
            (s for s in self._slots.values() if s.loaded and s is not slot and s.spec.slug not in mates),
            key=lambda s: s.last_used,
        )
        excess = len(others) + 1 - self.settings.max_loaded_models
        return others[: max(0, excess)]

    async def _make_room_for(self, slot: _Slot) -> None:
        victims = self._victims_for(slot)
        for victim in victims:
            victim.evicting = True
        try:
            for victim in victims:
                log.info("evicting %s to make room for %s", victim.spec.slug, slot.spec.slug)
                await victim.drained.wait()
                await self._unload(victim)
        finally:
            for victim in victims:
                victim.evicting = False

    async def _load(self, slot: _Slot) -> None:
        slug = slot.spec.slug
        engine = self._factory(slot.spec, self.engine_context(slot.spec))
        log.info("loading %s (executor %s)", slug, slot.spec.executor)
        started = time.monotonic()
        timeout = self.settings.load_timeout
        worker = asyncio.ensure_future(anyio.to_thread.run_sync(engine.load, abandon_on_cancel=True))
        slot.loading = True
        self._pause_queue_clocks(slot)
        try:
            await asyncio.wait_for(asyncio.shield(worker), timeout)
        except TimeoutError:
            slot.load_error = f"load timed out after {timeout:g}s (TALKIES_LOAD_TIMEOUT)"
            log.error("model %s: %s", slug, slot.load_error)
            worker.add_done_callback(lambda _: self._discard(engine, slug))
            raise LoadTimeoutError(f"model {slug!r}: {slot.load_error}") from None
        except asyncio.CancelledError:
            worker.add_done_callback(lambda _: self._discard(engine, slug))
            raise
        except TalkiesError as exc:
            slot.load_error = exc.message
            log.error("model %s failed to load: %s", slug, exc.message)
            raise
        except Exception as exc:
            slot.load_error = f"{type(exc).__name__}: {exc}"
            log.exception("model %s failed to load", slug)
            raise ModelLoadError(f"model {slug!r} failed to load: {slot.load_error}") from exc
        finally:
            slot.loading = False
            self._resume_queue_clocks(slot)
        slot.engine = engine
        slot.load_error = None
        slot.unload_error = None
        slot.loaded_at = slot.last_used = self._clock()
        log.info("loaded %s in %.2fs", slug, time.monotonic() - started)

    def _discard(self, engine: Engine, slug: str) -> None:
        """Clean up after a load that was abandoned (timed out or cancelled) but finished later."""
        try:
            engine.unload()
        except Exception:
            log.exception("model %s: unloading an abandoned load failed", slug)

    async def _unload(self, slot: _Slot) -> None:
        engine, slot.engine = slot.engine, None
        if engine is None:
            return
        slug = slot.spec.slug
        try:
            await anyio.to_thread.run_sync(engine.unload)
            slot.unload_error = None
        except Exception as exc:
            slot.unload_error = f"{type(exc).__name__}: {exc}"
            log.exception("model %s: unload failed", slug)
        del engine
        release_memory()
        log.info("unloaded %s", slug)

    async def _drop_crashed(self, slot: _Slot, engine: Engine) -> None:
        if slot.engine is engine:
            log.error(
                "model %s: engine worker crashed; marked unloaded, next request reloads it", slot.spec.slug
            )
            slot.engine = None
            with contextlib.suppress(Exception):
                await anyio.to_thread.run_sync(engine.unload)

    # --- explicit unload, sweeping, preload ------------------------------------------------------------

    async def unload(self, slug: str) -> None:
        """Unload one model, after its in-flight requests finish. 404 when unknown or not loaded."""
        slot = self._slots.get(slug)
        if slot is None:
            raise ModelNotFoundError(f"model {slug!r} not found", param="model_id")
        if not slot.loaded:
            raise ModelNotLoadedError(f"model {slug!r} is not loaded")
        await self._evict([slot])

    async def unload_all(self) -> list[str]:
        slots = [s for s in self._slots.values() if s.loaded]
        await self._evict(slots)
        return [s.spec.slug for s in slots]

    async def _evict(self, slots: list[_Slot]) -> None:
        async with self._lock:
            for slot in slots:
                slot.evicting = True
            try:
                for slot in slots:
                    await slot.drained.wait()
                    await self._unload(slot)
            finally:
                for slot in slots:
                    slot.evicting = False

    async def sweep_once(self) -> list[str]:
        """Unload every model idle for at least TALKIES_MODEL_TTL. Returns the slugs unloaded."""
        ttl = self.settings.model_ttl
        if ttl <= 0:
            return []
        now = self._clock()
        idle = [s for s in self._slots.values() if s.loaded and s.pins == 0 and now - s.last_used >= ttl]
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
        if interval > 0 and self.settings.model_ttl > 0 and self._sweeper is None:
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
            if slot.loaded:
                await self._unload(slot)

    # --- introspection -------------------------------------------------------------------------------

    def failed_loads(self) -> dict[str, str]:
        return {slug: s.load_error for slug, s in self._slots.items() if s.load_error and not s.loaded}

    def ps(self) -> list[dict[str, Any]]:
        now = self._clock()
        rows: list[dict[str, Any]] = []
        for slug, slot in self._slots.items():
            if not (slot.loaded or slot.unload_error):
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
            engine = slot.engine
            pid = getattr(engine, "worker_pid", None)
            if pid is not None:
                row["pid"] = pid
                rss = getattr(engine, "worker_rss", None)
                row["rss_bytes"] = rss() if callable(rss) else None
            rows.append(row)
        return rows


def release_memory() -> None:
    """Give freed memory back where we can: a gc pass, and the CUDA cache when torch is in use."""
    gc.collect()
    torch = sys.modules.get("torch")
    if torch is not None:
        with contextlib.suppress(Exception):
            if torch.cuda.is_available():
                torch.cuda.empty_cache()
