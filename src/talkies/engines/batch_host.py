"""The batching side of an engine: its limits, its `Batcher` (started with the model, closed with it) and
the totals /metrics reads. Engines that batch across requests mix in `BatchHost` (docs/batching.md)."""

from __future__ import annotations

from collections.abc import Callable, Generator, Hashable, Sequence
from typing import Any

from talkies.engines.base import EngineContext
from talkies.engines.batching import Batcher, BatchStats
from talkies.registry.batching import batch_limits
from talkies.registry.schema import ModelSpec


class BatchHost:
    """Per engine: `max_batch_size` units per call, `max_batch_wait_s` for company, on unless the
    server's TALKIES_BATCHING (`context.options["batching"]`) is false or the size is 1. The batcher's
    owner thread starts with the model (`start_batcher`) and stops with it (`stop_batcher`)."""

    def init_batching(self, spec: ModelSpec, context: EngineContext) -> None:
        size, wait_ms = batch_limits(spec)
        self.max_batch_size = size
        self.max_batch_wait_s = wait_ms / 1000
        self.batching = bool(context.options.get("batching", True)) and size > 1
        self.batch_stats = BatchStats()
        self._batcher: Batcher[Any, Any, Any] | None = None

    def start_batcher(self, name: str, run_batch: Callable[[Any, list[Any]], Sequence[Any]]) -> None:
        if self.batching and self._batcher is None:
            self._batcher = Batcher(
                name,
                run_batch,
                max_batch_size=self.max_batch_size,
                max_wait_s=self.max_batch_wait_s,
                on_batch=self.batch_stats.record,
            )

    def stop_batcher(self) -> None:
        batcher, self._batcher = self._batcher, None
        if batcher is not None:
            batcher.close()

    def batched(self, key: Hashable, units: Sequence[Any]) -> Generator[Any, None, None] | None:
        """Each unit's result through the batcher, in order, as its batch finishes; None when batching is
        off (decode yourself). Closing the iterator early drops the units still waiting."""
        batcher = self._batcher
        if batcher is None:
            return None
        return batcher.submit(key, units).results()

    def batch_snapshot(self) -> tuple[dict[int, int], float, int] | None:
        """Cross-request batch totals for /metrics (`BatchStats.snapshot`); None when batching is off."""
        return self.batch_stats.snapshot() if self.batching else None
