"""A model's cross-request batching limits and the concurrency that lets batches fill (docs/batching.md).

Pure functions of a registry entry (no engine imported): the engines read `batch_limits` when they start
their batcher, the registry loader applies `batching_concurrency` so the pool admits enough requests at
once for their units to meet.
"""

from __future__ import annotations

from talkies.registry.schema import EXECUTORS, ModelSpec


def batch_limits(spec: ModelSpec) -> tuple[int, float]:
    """(max_batch_size, max_batch_wait_ms): the entry's values, else its executor's defaults.
    A size of 0 or 1 means the model does not batch across requests."""
    executor = EXECUTORS[spec.executor]
    size = spec.max_batch_size or executor.max_batch_size
    wait_ms = executor.max_batch_wait_ms if spec.max_batch_wait_ms is None else spec.max_batch_wait_ms
    return size, wait_ms


def batching_concurrency(spec: ModelSpec, batching: bool) -> ModelSpec:
    """`spec` with `max_concurrency` raised to its `max_batch_size` when batching is on (TALKIES_BATCHING),
    the model batches, and the entry does not set `max_concurrency` itself: with the default of 1 the pool
    would never admit two requests at once and no batch could hold more than one request's units.
    An explicit `max_concurrency` (or llama-swap's `concurrencyLimit`) is always kept."""
    size, _ = batch_limits(spec)
    if not batching or size <= 1 or "max_concurrency" in spec.model_fields_set:
        return spec
    return spec.model_copy(update={"max_concurrency": max(spec.max_concurrency, size)})
