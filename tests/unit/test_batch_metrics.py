"""/metrics families of the cross-request batcher, read from each loaded engine at scrape time."""

from __future__ import annotations

from typing import Any

from prometheus_client import CollectorRegistry, generate_latest

from talkies.engines.batching import BatchRecord, BatchStats
from talkies.metrics import _PoolCollector


class _Batching:
    def __init__(self) -> None:
        self.stats = BatchStats()

    def batch_snapshot(self) -> tuple[dict[int, int], float, int]:
        return self.stats.snapshot()


class _Plain:
    """An engine that does not batch (no `batch_snapshot`)."""


class _Pool:
    def __init__(self, engines: dict[str, Any]) -> None:
        self.engines = engines

    def occupancy(self) -> dict[str, tuple[int, int]]:
        return dict.fromkeys(self.engines, (0, 0))

    def is_loaded(self, slug: str) -> bool:
        return True

    def peek_engine(self, slug: str) -> Any:
        return self.engines[slug]

    def ps(self) -> list[dict[str, Any]]:
        return []


def test_batch_size_histogram_wait_and_timer_per_model() -> None:
    whisper = _Batching()
    for record in (BatchRecord(1, "timer", 0.01), BatchRecord(3, "full", 0.002), BatchRecord(8, "full", 0.0)):
        whisper.stats.record(record)
    registry = CollectorRegistry()
    registry.register(_PoolCollector(_Pool({"whisper-base": whisper, "espeak": _Plain()})))  # type: ignore[arg-type]
    text = generate_latest(registry).decode()
    assert 'talkies_batch_size_bucket{le="1.0",model="whisper-base"} 1.0' in text
    assert 'talkies_batch_size_bucket{le="4.0",model="whisper-base"} 2.0' in text
    assert 'talkies_batch_size_bucket{le="+Inf",model="whisper-base"} 3.0' in text
    assert 'talkies_batch_size_sum{model="whisper-base"} 12.0' in text
    assert 'talkies_batch_wait_seconds_total{model="whisper-base"} 0.012' in text
    assert 'talkies_batch_timer_closed_total{model="whisper-base"} 1.0' in text
    assert 'model="espeak"' not in text.split("talkies_batch_size")[1], "engines that do not batch: no series"
