from __future__ import annotations

import asyncio
import importlib.util
import threading
from typing import Any

import anyio
import pytest

from talkies.errors import (
    EngineUnavailableError,
    LoadTimeoutError,
    ModelLoadError,
    ModelNotFoundError,
    ModelNotLoadedError,
    QueueFullError,
    QueueTimeoutError,
    WorkerCrashedError,
)
from talkies.pool import ModelPool
from talkies.registry import load_registry
from talkies.settings import Settings
from tests.fakes import FakeClock, FakeFactory, wait_until

pytestmark = pytest.mark.anyio


def make_pool(settings: Settings, factory: FakeFactory, clock: FakeClock | None = None) -> ModelPool:
    assert settings.models_file is not None
    registry = load_registry(settings.models_file)
    return ModelPool(registry, settings, engine_factory=factory, clock=clock or FakeClock())


async def use(pool: ModelPool, slug: str) -> None:
    async with pool.acquire(slug) as engine:
        await anyio.to_thread.run_sync(engine.voices)


async def test_concurrent_first_acquires_load_once(make_settings: Any, fake_factory: FakeFactory) -> None:
    fake_factory["asr-a"].load_delay = 0.2
    pool = make_pool(make_settings(max_queue=50), fake_factory)

    async def one() -> None:
        async with pool.acquire("asr-a"):
            await asyncio.sleep(0)

    await asyncio.gather(*(one() for _ in range(10)))
    assert fake_factory["asr-a"].loads == 1
    assert pool.is_loaded("asr-a")


async def test_eviction_waits_for_in_flight_request(make_settings: Any, fake_factory: FakeFactory) -> None:
    gate = threading.Event()
    fake_factory["asr-a"].gate = gate
    pool = make_pool(make_settings(max_loaded_models=1), fake_factory)
    engine_a: Any = None

    async def long_request() -> None:
        nonlocal engine_a
        async with pool.acquire("asr-a") as engine:
            engine_a = engine
            await anyio.to_thread.run_sync(engine.transcribe, _request())

    first = asyncio.create_task(long_request())
    await wait_until(lambda: fake_factory["asr-a"].active == 1)
    second = asyncio.create_task(use(pool, "asr-b"))  # needs asr-a evicted (one resident model)
    await asyncio.sleep(0.1)
    assert not second.done()
    assert engine_a.loaded, "a model was freed under a running request"
    assert fake_factory["asr-a"].unloads == 0
    gate.set()
    await asyncio.gather(first, second)
    assert fake_factory["asr-a"].unloads == 1
    assert pool.is_loaded("asr-b")
    assert not pool.is_loaded("asr-a")


async def test_lru_keeps_max_loaded_models(make_settings: Any, fake_factory: FakeFactory) -> None:
    clock = FakeClock()
    pool = make_pool(make_settings(max_loaded_models=2), fake_factory, clock)
    await use(pool, "asr-a")
    clock.advance(1)
    await use(pool, "asr-b")
    clock.advance(1)
    await use(pool, "asr-a")  # asr-b is now least recently used
    clock.advance(1)
    await use(pool, "tts-a")
    assert {row["model"] for row in pool.ps()} == {"asr-a", "tts-a"}


async def test_max_loaded_models_one_keeps_one_model(make_settings: Any, fake_factory: FakeFactory) -> None:
    pool = make_pool(make_settings(max_loaded_models=1), fake_factory)
    await use(pool, "asr-a")
    await use(pool, "tts-a")
    assert [row["model"] for row in pool.ps()] == ["tts-a"]


async def test_group_members_stay_resident_together(make_settings: Any, fake_factory: FakeFactory) -> None:
    settings = make_settings(groups={"duo": {"members": ["asr-a", "tts-a"]}}, max_loaded_models=1)
    pool = make_pool(settings, fake_factory)
    await use(pool, "asr-a")
    await use(pool, "tts-a")
    assert {row["model"] for row in pool.ps()} == {"asr-a", "tts-a"}
    await use(pool, "asr-b")  # not in the group: both members go
    assert [row["model"] for row in pool.ps()] == ["asr-b"]


async def test_full_queue_answers_429_with_retry_after(make_settings: Any, fake_factory: FakeFactory) -> None:
    gate = threading.Event()
    fake_factory["asr-a"].gate = gate
    pool = make_pool(make_settings(max_queue=2), fake_factory)

    async def request() -> None:
        async with pool.acquire("asr-a") as engine:
            await anyio.to_thread.run_sync(engine.transcribe, _request())

    running = asyncio.create_task(request())
    await wait_until(lambda: fake_factory["asr-a"].active == 1)
    queued = [asyncio.create_task(request()) for _ in range(2)]
    await asyncio.sleep(0.05)
    with pytest.raises(QueueFullError) as info:
        async with pool.acquire("asr-a"):
            pass
    assert info.value.retry_after >= 1
    gate.set()
    await asyncio.gather(running, *queued)
    assert fake_factory["asr-a"].max_active == 1  # max_concurrency defaults to 1


async def test_max_concurrency_from_registry(make_settings: Any, fake_factory: FakeFactory) -> None:
    gate = threading.Event()
    fake_factory["asr-a"].gate = gate
    settings = make_settings(models={"asr-a": {"executor": "pocketsphinx", "max_concurrency": 3}})
    pool = make_pool(settings, fake_factory)

    async def request() -> None:
        async with pool.acquire("asr-a") as engine:
            await anyio.to_thread.run_sync(engine.transcribe, _request())

    tasks = [asyncio.create_task(request()) for _ in range(5)]
    await wait_until(lambda: fake_factory["asr-a"].active == 3)
    await asyncio.sleep(0.05)
    assert fake_factory["asr-a"].active == 3
    gate.set()
    await asyncio.gather(*tasks)
    assert fake_factory["asr-a"].max_active == 3


async def test_queue_timeout_answers_503(make_settings: Any, fake_factory: FakeFactory) -> None:
    gate = threading.Event()
    fake_factory["asr-a"].gate = gate
    pool = make_pool(make_settings(queue_timeout=0.2), fake_factory)

    async def request() -> None:
        async with pool.acquire("asr-a") as engine:
            await anyio.to_thread.run_sync(engine.transcribe, _request())

    running = asyncio.create_task(request())
    await wait_until(lambda: fake_factory["asr-a"].active == 1)
    with pytest.raises(QueueTimeoutError, match="TALKIES_QUEUE_TIMEOUT"):
        async with pool.acquire("asr-a"):
            pass
    gate.set()
    await running
    assert pool.ps()[0]["queued"] == 0


async def test_cancelled_waiter_leaves_the_queue(make_settings: Any, fake_factory: FakeFactory) -> None:
    gate = threading.Event()
    fake_factory["asr-a"].gate = gate
    pool = make_pool(make_settings(max_queue=1), fake_factory)

    async def request() -> None:
        async with pool.acquire("asr-a") as engine:
            await anyio.to_thread.run_sync(engine.transcribe, _request())

    running = asyncio.create_task(request())
    await wait_until(lambda: fake_factory["asr-a"].active == 1)
    waiter = asyncio.create_task(request())
    await wait_until(lambda: pool.ps()[0]["queued"] == 1)
    waiter.cancel()  # what a client disconnect does to its request
    with pytest.raises(asyncio.CancelledError):
        await waiter
    assert pool.ps()[0]["queued"] == 0
    replacement = asyncio.create_task(request())  # the freed place is usable: no 429
    await wait_until(lambda: pool.ps()[0]["queued"] == 1)
    gate.set()
    await asyncio.gather(running, replacement)
    assert fake_factory["asr-a"].calls == 2


async def test_idle_sweeper_on_fake_clock(make_settings: Any, fake_factory: FakeFactory) -> None:
    clock = FakeClock()
    pool = make_pool(make_settings(model_ttl=600, max_loaded_models=2), fake_factory, clock)
    await use(pool, "asr-a")
    clock.advance(300)
    await use(pool, "tts-a")
    clock.advance(299)
    assert await pool.sweep_once() == []
    clock.advance(1)
    assert await pool.sweep_once() == ["asr-a"]
    clock.advance(300)
    assert await pool.sweep_once() == ["tts-a"]
    assert pool.ps() == []


async def test_ttl_zero_disables_sweeping(make_settings: Any, fake_factory: FakeFactory) -> None:
    clock = FakeClock()
    pool = make_pool(make_settings(model_ttl=0), fake_factory, clock)
    await use(pool, "asr-a")
    clock.advance(10**6)
    assert await pool.sweep_once() == []


async def test_sweeper_skips_a_model_in_use(make_settings: Any, fake_factory: FakeFactory) -> None:
    clock = FakeClock()
    pool = make_pool(make_settings(model_ttl=10), fake_factory, clock)
    async with pool.acquire("asr-a"):
        clock.advance(100)
        assert await pool.sweep_once() == []
    clock.advance(10)
    assert await pool.sweep_once() == ["asr-a"]


async def test_load_timeout(make_settings: Any, fake_factory: FakeFactory) -> None:
    fake_factory["asr-a"].load_delay = 1.0
    pool = make_pool(make_settings(load_timeout=0.1), fake_factory)
    with pytest.raises(LoadTimeoutError, match="TALKIES_LOAD_TIMEOUT"):
        await use(pool, "asr-a")
    assert not pool.is_loaded("asr-a")
    assert "timed out" in pool.failed_loads()["asr-a"]
    fake_factory["asr-a"].load_delay = 0
    await use(pool, "asr-a")  # the pool is consistent: a later load works
    assert pool.failed_loads() == {}


async def test_failed_load_is_clear_and_pool_consistent(
    make_settings: Any, fake_factory: FakeFactory
) -> None:
    fake_factory["asr-a"].load_error = RuntimeError("weights are corrupt")
    pool = make_pool(make_settings(max_loaded_models=1), fake_factory)
    await use(pool, "asr-b")
    with pytest.raises(ModelLoadError, match="weights are corrupt"):
        await use(pool, "asr-a")
    assert pool.ps() == []  # asr-b was evicted for the attempt, nothing half-loaded remains
    fake_factory["asr-a"].load_error = None
    await use(pool, "asr-a")
    assert [row["model"] for row in pool.ps()] == ["asr-a"]


async def test_unload_error_is_visible(make_settings: Any, fake_factory: FakeFactory) -> None:
    fake_factory["asr-a"].unload_error = RuntimeError("driver refused")
    pool = make_pool(make_settings(), fake_factory)
    await use(pool, "asr-a")
    await pool.unload("asr-a")
    rows = pool.ps()
    assert rows[0]["model"] == "asr-a"
    assert rows[0]["loaded"] is False
    assert "driver refused" in rows[0]["unload_error"]


async def test_unload_unknown_and_not_loaded(make_settings: Any, fake_factory: FakeFactory) -> None:
    pool = make_pool(make_settings(), fake_factory)
    with pytest.raises(ModelNotFoundError):
        await pool.unload("nope")
    with pytest.raises(ModelNotLoadedError):
        await pool.unload("asr-a")


async def test_unknown_model(make_settings: Any, fake_factory: FakeFactory) -> None:
    pool = make_pool(make_settings(), fake_factory)
    with pytest.raises(ModelNotFoundError, match="asr-a"):
        await use(pool, "missing")


async def test_unavailable_engine_answers_503(
    make_settings: Any, fake_factory: FakeFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == "nemo" else real(name, *a)
    )
    settings = make_settings(
        models={"canary": {"executor": "canary_multitask", "repo": "nvidia/canary-180m-flash"}}
    )
    pool = make_pool(settings, fake_factory)
    with pytest.raises(EngineUnavailableError, match=r"pip install 'talkies\[nemo\]'"):
        await use(pool, "canary")
    assert fake_factory.engines == []


async def test_crashed_worker_marks_model_unloaded(make_settings: Any, fake_factory: FakeFactory) -> None:
    pool = make_pool(make_settings(), fake_factory)
    with pytest.raises(WorkerCrashedError):
        async with pool.acquire("asr-a"):
            raise WorkerCrashedError("worker died")
    assert not pool.is_loaded("asr-a")
    await use(pool, "asr-a")
    assert fake_factory["asr-a"].loads == 2


async def test_preload_counts_as_use(make_settings: Any, fake_factory: FakeFactory) -> None:
    clock = FakeClock()
    pool = make_pool(make_settings(model_ttl=60), fake_factory, clock)
    await pool.preload(("tts-a",))
    assert pool.is_loaded("tts-a")
    clock.advance(59)
    assert await pool.sweep_once() == []


async def test_unload_all_waits_and_reports(make_settings: Any, fake_factory: FakeFactory) -> None:
    pool = make_pool(make_settings(max_loaded_models=3), fake_factory)
    await use(pool, "asr-a")
    await use(pool, "tts-a")
    assert sorted(await pool.unload_all()) == ["asr-a", "tts-a"]
    assert pool.ps() == []


def _request() -> Any:
    import numpy as np

    from talkies.engines.base import TranscriptionRequest

    return TranscriptionRequest(audio=np.zeros(1600, dtype=np.float32))


async def test_loading_the_requested_model_is_not_queue_time(
    make_settings: Any, fake_factory: FakeFactory
) -> None:
    """Requests waiting for their own model to load are bounded by TALKIES_LOAD_TIMEOUT, not the queue."""
    fake_factory["asr-a"].load_delay = 2.0
    pool = make_pool(make_settings(queue_timeout=1.0, max_queue=10), fake_factory)
    first = [asyncio.create_task(use(pool, "asr-a")) for _ in range(3)]
    await asyncio.sleep(1.2)  # a latecomer arrives while the load is under way
    late = asyncio.create_task(use(pool, "asr-a"))
    await asyncio.gather(*first, late)
    assert fake_factory["asr-a"].loads == 1


async def test_waiting_for_another_model_still_counts(make_settings: Any, fake_factory: FakeFactory) -> None:
    gate = threading.Event()
    fake_factory["asr-a"].gate = gate
    pool = make_pool(make_settings(queue_timeout=0.2, max_loaded_models=1), fake_factory)

    async def busy() -> None:
        async with pool.acquire("asr-a") as engine:
            await anyio.to_thread.run_sync(engine.transcribe, _request())

    running = asyncio.create_task(busy())
    await wait_until(lambda: fake_factory["asr-a"].active == 1)
    with pytest.raises(QueueTimeoutError):
        await use(pool, "asr-b")  # asr-a never drains in time
    gate.set()
    await running


async def test_queue_clock_pauses_when_the_awaited_load_starts(
    make_settings: Any, fake_factory: FakeFactory
) -> None:
    """Requests queued while another model drains: the drain counts, their own model's load does not."""
    gate = threading.Event()
    fake_factory["asr-b"].gate = gate
    # Seconds of margin for the drain and asr-b's unload (a worker thread, slow on a loaded machine).
    fake_factory["asr-a"].load_delay = 6.0
    pool = make_pool(make_settings(queue_timeout=5.0, max_queue=10, max_loaded_models=1), fake_factory)

    async def busy() -> None:
        async with pool.acquire("asr-b") as engine:
            await anyio.to_thread.run_sync(engine.transcribe, _request())

    running = asyncio.create_task(busy())
    await wait_until(lambda: fake_factory["asr-b"].active == 1)
    waiting = [asyncio.create_task(use(pool, "asr-a")) for _ in range(3)]
    await asyncio.sleep(0.5)
    gate.set()  # asr-b drains after 0.5 s of queueing; asr-a then loads for 6 s (> the 5 s queue clock)
    await asyncio.gather(running, *waiting)
    assert fake_factory["asr-a"].loads == 1


async def test_an_alias_acquires_its_model(make_settings: Any, fake_factory: FakeFactory) -> None:
    models = {
        "asr-a": {"executor": "pocketsphinx", "aliases": ["whisper-1"]},
        "asr-b": {"executor": "pocketsphinx"},
    }
    pool = make_pool(make_settings(models), fake_factory)
    async with pool.acquire("whisper-1"):
        assert pool.is_loaded("asr-a")
        assert pool.is_loaded("whisper-1")
    assert fake_factory["asr-a"].loads == 1
    await pool.unload("whisper-1")
    assert not pool.is_loaded("asr-a")
