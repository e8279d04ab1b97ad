"""Starting and stopping the engines of the pool's slots: a load bounded by TALKIES_LOAD_TIMEOUT with the
memory it takes measured, unloads that really release memory, and engines that crash, time out or exit on
their own (an external server), after which the next request loads the model again."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable

import anyio

from talkies.engines.base import Engine
from talkies.engines.common import release_memory
from talkies.errors import LoadTimeoutError, ModelLoadError, TalkiesError
from talkies.memory import MemoryBudget
from talkies.pool.slot import PoolEvents, Slot
from talkies.registry import ModelSpec
from talkies.settings import Settings

log = logging.getLogger("talkies.pool")


class EngineLoads:
    def __init__(
        self,
        make: Callable[[ModelSpec], Engine],
        settings: Settings,
        memory: MemoryBudget,
        clock: Callable[[], float],
        events: Callable[[], PoolEvents],
    ) -> None:
        self._make = make  # an engine for a spec, not loaded yet
        self.settings = settings
        self.memory = memory
        self._clock = clock
        self._events = events  # the pool's current events (the app installs its metrics after start)
        self._background: set[asyncio.Task[None]] = set()

    async def load(self, slot: Slot) -> None:
        """Under the residency lock: start `slot`'s engine (bounded by TALKIES_LOAD_TIMEOUT; a load given up
        on is unloaded when it finishes), measure what it holds, and make it the slot's engine."""
        slug = slot.spec.slug
        engine = self._make(slot.spec)
        log.info("loading %s (executor %s)", slug, slot.spec.executor)
        started = time.monotonic()
        timeout = self.settings.load_timeout
        worker = asyncio.ensure_future(anyio.to_thread.run_sync(engine.load, abandon_on_cancel=True))
        slot.loading = True
        slot.pause_queue_clocks()
        before = await anyio.to_thread.run_sync(self.memory.usage_now)
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
            slot.resume_queue_clocks()
        figure = await anyio.to_thread.run_sync(self.memory.measure, engine, before)
        if figure is not None:
            self.memory.measured[slug] = figure
        slot.engine = engine
        slot.load_error = None
        slot.unload_error = None
        slot.exited = None
        slot.loaded_at = slot.last_used = self._clock()
        slot.resident_since = asyncio.get_running_loop().time()
        self._listen_for_exit(slot, engine)
        log.info("loaded %s in %.2fs", slug, time.monotonic() - started)
        self._events().loaded(slug, time.monotonic() - started)

    def _discard(self, engine: Engine, slug: str) -> None:
        """Clean up after a load that was abandoned (timed out or cancelled) but finished later."""
        try:
            engine.unload()
        except Exception:
            log.exception("model %s: unloading an abandoned load failed", slug)

    async def unload(self, slot: Slot) -> None:
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
        self._events().unloaded(slug)

    def _listen_for_exit(self, slot: Slot, engine: Engine) -> None:
        """Engines that can stop on their own (an external server) report it; the model is then marked
        unloaded at once (visible in /api/ps) and its next request loads it again."""
        listen = getattr(engine, "set_exit_listener", None)
        if not callable(listen):
            return
        loop = asyncio.get_running_loop()

        def exited(code: int) -> None:
            loop.call_soon_threadsafe(self._engine_exited, slot, engine, code)

        listen(exited)

    def _engine_exited(self, slot: Slot, engine: Engine, code: int) -> None:
        if slot.engine is not engine:
            return
        slot.exited = f"exited on its own (code {code}); the next request starts it again"
        log.error("model %s: %s", slot.spec.slug, slot.exited)
        self._events().engine_failed(slot.spec.slug, "exited")
        slot.engine = None
        task = asyncio.get_running_loop().create_task(anyio.to_thread.run_sync(engine.unload))
        self._background.add(task)  # reaps the child; kept referenced until done
        task.add_done_callback(self._background.discard)

    async def drop_crashed(self, slot: Slot, engine: Engine, cause: str = "crash") -> None:
        """The engine crashed or timed out under a request: mark the model unloaded (the next request loads
        it again) and stop what is left of it."""
        if slot.engine is engine:
            self._events().engine_failed(slot.spec.slug, cause)
            log.error(
                "model %s: engine worker crashed or timed out; marked unloaded, the next request reloads it",
                slot.spec.slug,
            )
            slot.engine = None
            with contextlib.suppress(Exception):
                await anyio.to_thread.run_sync(engine.unload)
