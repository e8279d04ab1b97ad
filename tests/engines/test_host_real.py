"""The engine host with real engines on generated models: memory really goes back, models run in parallel.

How much sooner two resident models finish together than one after the other is a wall-clock figure, so it
lives in bench/two_resident_models.py (BENCHMARKS.md); the test here checks that the two workers compute in
the same instants, which holds on a busy machine too."""

from __future__ import annotations

import threading
from collections.abc import AsyncIterator
from pathlib import Path

import psutil
import pytest

from tests.engines.memory_probe import run_probe
from tests.engines.resident_pair import MODELS, Pair, bounded_pool, install

pytestmark = pytest.mark.slow


@pytest.mark.parametrize("slug", list(MODELS))
def test_unloading_a_worker_gives_the_memory_back(tmp_path: Path, slug: str) -> None:
    """The server's memory (parent + workers) after load, requests and unload is back near idle."""
    model_dir = install(tmp_path, slug)

    figures = run_probe(MODELS[slug]["executor"], model_dir, "process")

    assert figures["worker_pid"] is not None
    assert figures["loaded"] - figures["idle"] > 100 * 1024 * 1024, figures  # the model was resident
    assert figures["unloaded"] <= figures["idle"] * 1.15, figures


@pytest.fixture
async def pair(tmp_path: Path) -> AsyncIterator[Pair]:
    pair = Pair(bounded_pool(tmp_path))
    try:
        await pair.asr()
        await pair.tts()  # both resident (max_loaded_models=2) and warmed up
        assert {row["model"] for row in pair.pool.ps()} == set(MODELS)
        yield pair
    finally:
        await pair.pool.close()


@pytest.mark.anyio
async def test_asr_and_tts_on_two_resident_models_compute_at_the_same_time(pair: Pair) -> None:
    """Both workers burn CPU in the same instants: neither request queues behind the other. (Holds on a
    busy machine too, where the scheduler time-slices the two workers.)"""
    workers = {name: psutil.Process(pid) for name, pid in pair.pids.items()}
    windows: list[tuple[bool, bool]] = []
    done = threading.Event()

    def sample() -> None:
        last = {name: sum(p.cpu_times()[:2]) for name, p in workers.items()}
        while not done.wait(0.05):
            now = {name: sum(p.cpu_times()[:2]) for name, p in workers.items()}
            windows.append((now["asr"] > last["asr"], now["tts"] > last["tts"]))
            last = now

    sampler = threading.Thread(target=sample)
    sampler.start()
    try:
        await pair.both()
    finally:
        done.set()
        sampler.join()

    busy = [w for w in windows if any(w)]
    together = [w for w in windows if all(w)]
    assert len(together) >= 3, windows
    assert len(together) >= 0.25 * len(busy), windows
