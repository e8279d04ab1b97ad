"""The blocking half of engine loads and unloads, run in worker threads by the scheduler (never on the
event loop): a load with the memory it takes measured, an unload that really releases memory, and the
listener through which an engine that stops on its own (an external server) reports it."""

from __future__ import annotations

import logging
from collections.abc import Callable

from talkies.engines.base import Engine
from talkies.engines.common import release_memory
from talkies.errors import ModelLoadError, TalkiesError
from talkies.memory import MemoryBudget
from talkies.registry import ModelSpec

log = logging.getLogger("talkies.pool")


class EngineLoads:
    def __init__(self, make: Callable[[ModelSpec], Engine], memory: MemoryBudget) -> None:
        self._make = make  # an engine for a spec, not loaded yet
        self.memory = memory

    def make(self, spec: ModelSpec) -> Engine:
        return self._make(spec)

    def load_blocking(self, engine: Engine, slug: str) -> int | None:
        """In a worker thread: load `engine`; the bytes it holds (None: unknown). Errors other than the
        domain's become ModelLoadError naming the model."""
        before = self.memory.usage_now()
        try:
            engine.load()
        except TalkiesError:
            raise
        except Exception as exc:
            log.exception("model %s failed to load", slug)
            raise ModelLoadError(f"model {slug!r} failed to load: {type(exc).__name__}: {exc}") from exc
        return self.memory.measure(engine, before)

    def unload_blocking(self, engine: Engine, slug: str) -> str | None:
        """In a worker thread: unload `engine` and give its memory back; the error, if it failed."""
        error: str | None = None
        try:
            engine.unload()
        except Exception as exc:
            error = f"{type(exc).__name__}: {exc}"
            log.exception("model %s: unload failed", slug)
        release_memory()
        return error

    @staticmethod
    def listen_for_exit(engine: Engine, exited: Callable[[int], None]) -> None:
        """Engines that can stop on their own (an external server) call `exited(code)` from any thread."""
        listen = getattr(engine, "set_exit_listener", None)
        if callable(listen):
            listen(exited)
