"""The model pool: loads models on demand, keeps them resident by policy, and never frees one in use.

    async with pool.acquire("whisper-large-v3") as engine:
        result = await anyio.to_thread.run_sync(engine.transcribe, request)

This is the request side. Every residency decision is made by one owner task (talkies.pool.scheduler and
talkies.pool.owner; docs/lifecycle.md draws its states and events): `acquire` takes an admission place
(talkies.pool.admission), asks the owner for a turn and awaits it holding nothing, uses the engine, and
returns the turn with what happened (a crash, an engine timeout).

- A model loads exactly once however many first requests arrive together; a client that hangs up during a
  slow load never makes the next waiter start a second one; a failed or timed-out load answers all of its
  waiters at once.
- A turn is a pin and a concurrency permit at once: a request holds it until the engine really stopped
  working for it (services run engine calls as `BlockingSteps`, which wait for the call to return before a
  cancellation goes on). A worker crash or engine timeout drops the model; its waiters load it again.
- Residency: models stay resident while their footprints fit the memory budget (TALKIES_MEMORY_BUDGET;
  measured after load, estimated from the snapshot before the first), up to `max_loaded_models`; a model
  that loads or unloads counts. Idle models make room first (talkies.pool.residency chooses which); a
  model that can never fit answers ModelTooLargeError (507) with the figures. Registry `groups` keep their
  meaning (talkies.registry.groups); slugs sharing one copy of weights neither count nor evict each other.
- Swap fairness: a load that needs the room of a model in use waits while that model serves its queue, for
  at most TALKIES_SWAP_MAX_WAIT past the waiting model's first request or the resident's load; then the
  resident takes no new requests and goes once the ones it had are done. Requests for the waiting model
  accumulate meanwhile and are all served once it is loaded: one swap per batch, not per request.
- Concurrency: `max_concurrency` requests run at once per model; up to `max_queue` more are admitted, one
  more answers 429 (`check_queue`, which services call as soon as the model is known); a request waiting
  longer than `queue_timeout` answers 503 (its own model's load excluded). Cancelling a waiting request
  (a client that went away) takes it out of the queue.
- Shutdown (`close`): waiters are answered, every model unloads once no call is inside it; after
  TALKIES_UNLOAD_WAIT a worker with a call still inside is killed, an in-process engine is left alone.
- The clock is injected so the idle sweeper is tested without sleeping.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Callable
from typing import Any, cast

from talkies.engines import create_engine, unavailable_reason
from talkies.engines.base import Engine, EngineContext, Modality
from talkies.errors import (
    EngineTimeoutError,
    EngineUnavailableError,
    ModelNotFoundError,
    ModelNotLoadedError,
    WorkerCrashedError,
)
from talkies.memory import MemoryBudget, resolve_budget
from talkies.pool.admission import Admission
from talkies.pool.loads import EngineLoads
from talkies.pool.owner import Owner
from talkies.pool.residency import Residency
from talkies.pool.slot import PoolEvents, Slot
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
        self._slots = {slug: Slot(spec=spec) for slug, spec in registry.models.items()}
        self._sweeper: asyncio.Task[None] | None = None
        self.group_rules = GroupRules(registry.group_specs)
        self.events = PoolEvents()
        self.memory = MemoryBudget(resolve_budget(settings.memory_budget, device), device)
        factory = engine_factory or create_engine
        self.loads = EngineLoads(lambda spec: factory(spec, self.engine_context(spec)), self.memory)
        self.residency = Residency(registry, settings, self.group_rules, self.memory, self._slots)
        self.admission = Admission(settings)
        self.owner = Owner(self._slots, self.residency, self.loads, settings, clock, lambda: self.events)

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
        """Admission: take a place in `slug`'s queue for the current request, or raise `QueueFullError`
        (429 with Retry-After). Services call it as soon as the model is known, so a refused request is
        not decoded (or stored) first; the place is kept until the request ends (`admission_scope`)."""
        self.admission.check(self._slots[self.spec(slug).slug])

    def admission_scope(self) -> contextlib.AbstractContextManager[None]:
        """One request's life: the places `check_queue` takes in it are returned when it ends."""
        return self.admission.scope()

    def decoding(self) -> contextlib.AbstractAsyncContextManager[None]:
        """One of TALKIES_MAX_DECODES decode slots, held while a request's audio is decoded."""
        return self.admission.decode_slot()

    @contextlib.asynccontextmanager
    async def acquire(self, slug: str) -> AsyncIterator[Engine]:
        spec = self.spec(slug)
        slug = spec.slug  # an alias pins the model it names
        reason = unavailable_reason(spec, self.device)
        if reason:
            raise EngineUnavailableError(f"model {slug!r} is unavailable: {reason}")
        slot = self._slots[slug]
        with self.admission.place(slot):
            waiter = self.owner.request_turn(slot)
            try:
                engine = await waiter.future
            except asyncio.CancelledError:
                self.owner.abandon(slot, waiter)
                raise
            cause: str | None = None
            try:
                yield engine
            except (WorkerCrashedError, EngineTimeoutError) as exc:
                cause = "timeout" if isinstance(exc, EngineTimeoutError) else "crash"
                raise
            finally:
                # Posted before any await: the turn is returned even if this task is cancelled again.
                await asyncio.shield(self.owner.release(slot, engine, cause))

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
        futures = cast(list[asyncio.Future[None]], await self.owner.ask(lambda a: self.owner.evict(slots, a)))
        await asyncio.gather(*futures)

    def _ttl(self, spec: ModelSpec) -> float:
        """A registry entry's `ttl` (0 = never), else TALKIES_MODEL_TTL."""
        if spec.ttl is not None and spec.ttl >= 0:
            return float(spec.ttl)
        return self.settings.model_ttl

    async def sweep_once(self) -> list[str]:
        """Unload every model idle for at least its ttl (TALKIES_MODEL_TTL unless the registry entry sets
        `ttl`). Returns the slugs unloaded."""
        answer = await self.owner.ask(lambda a: self.owner.sweep(self._ttl, a))
        slugs, futures = cast(tuple[list[str], list[asyncio.Future[None]]], answer)
        await asyncio.gather(*futures)
        return slugs

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
        """Shutdown: answer the waiters, unload every model once no call is inside it; after
        TALKIES_UNLOAD_WAIT kill the workers that still run a call (an in-process engine with a call
        inside is never unloaded), and wait as long again for them to be reaped."""
        if self._sweeper is not None:
            self._sweeper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._sweeper
            self._sweeper = None
        wait = self.settings.unload_wait
        quiet = self.owner.ask(self.owner.begin_close)
        try:
            await asyncio.wait_for(asyncio.shield(quiet), wait)
        except TimeoutError:
            left = cast(list[str], await self.owner.ask(self.owner.kill_stragglers))
            if left:
                log.warning("not unloaded at shutdown (a call is still inside): %s", ", ".join(left))
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asyncio.shield(quiet), wait)
        await self.owner.drain_work(wait)
        await self.owner.stop()

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
