"""Memory-aware residency and swap fairness in the pool, with fake engines that report their footprint.

Real engines alternating without reloads under the default budget: tests/engines/test_residency_real.py."""

from __future__ import annotations

import asyncio
import threading
from pathlib import Path
from typing import Any

import anyio
import pytest

from talkies.api.app import create_app
from talkies.errors import ModelTooLargeError
from talkies.pool import ModelPool
from talkies.registry import load_registry
from talkies.settings import Settings
from tests.fakes import FakeClock, FakeFactory, wait_until
from tests.server import asgi_client
from tests.unit.test_pool import _request, use

pytestmark = pytest.mark.anyio

MIB = 1024 * 1024


def make_pool(settings: Settings, factory: FakeFactory, clock: FakeClock | None = None) -> ModelPool:
    assert settings.models_file is not None
    registry = load_registry(settings.models_file)
    return ModelPool(registry, settings, engine_factory=factory, clock=clock or FakeClock())


def resident(pool: ModelPool) -> set[str]:
    return {row["model"] for row in pool.ps() if row["loaded"]}


async def test_default_budget_keeps_an_asr_and_a_tts_model_resident(
    make_settings: Any, fake_factory: FakeFactory
) -> None:
    """TALKIES_MAX_LOADED_MODELS no longer forces one model: alternating ASR / TTS loads each once."""
    pool = make_pool(make_settings(), fake_factory)
    for _ in range(5):
        await use(pool, "asr-a")
        await use(pool, "tts-a")
    assert resident(pool) == {"asr-a", "tts-a"}
    assert fake_factory["asr-a"].loads == fake_factory["tts-a"].loads == 1


async def test_a_budget_that_fits_two_evicts_the_least_recently_used(
    make_settings: Any, fake_factory: FakeFactory
) -> None:
    for slug in ("asr-a", "asr-b", "tts-a"):
        fake_factory[slug].memory = 40 * MIB
    clock = FakeClock()
    pool = make_pool(make_settings(memory_budget="100M"), fake_factory, clock)
    await use(pool, "asr-a")
    clock.advance(1)
    await use(pool, "asr-b")
    clock.advance(1)
    await use(pool, "asr-a")  # asr-b is now the least recently used
    clock.advance(1)
    await use(pool, "tts-a")  # 3 x 40 MiB > 100 MiB: one must go
    assert resident(pool) == {"asr-a", "tts-a"}
    assert fake_factory["asr-b"].unloads == 1
    assert fake_factory["asr-a"].unloads == 0
    rows = {row["model"]: row for row in pool.ps()}
    assert rows["tts-a"]["memory_bytes"] == 40 * MIB
    assert rows["tts-a"]["memory"] == "measured"
    assert pool.memory_summary() == {"budget_bytes": 100 * MIB, "used_bytes": 80 * MIB}


async def test_a_budget_that_fits_one_swaps(make_settings: Any, fake_factory: FakeFactory) -> None:
    fake_factory["asr-a"].memory = fake_factory["tts-a"].memory = 60 * MIB
    pool = make_pool(make_settings(memory_budget="100M"), fake_factory)
    await use(pool, "asr-a")
    await use(pool, "tts-a")
    assert resident(pool) == {"tts-a"}
    await use(pool, "asr-a")  # measured now: evicted before the load, not after
    assert resident(pool) == {"asr-a"}
    assert fake_factory["asr-a"].loads == 2


async def test_a_model_larger_than_the_budget_gets_a_clear_error(
    make_settings: Any, fake_factory: FakeFactory
) -> None:
    """Before its first load a weight-free engine counts a small constant (32 MiB)."""
    pool = make_pool(make_settings(memory_budget="10M"), fake_factory)
    with pytest.raises(ModelTooLargeError) as info:
        await use(pool, "asr-a")
    message = info.value.message
    assert "'asr-a' needs about 32 MiB (estimated)" in message
    assert "memory budget is 10 MiB (TALKIES_MEMORY_BUDGET)" in message
    assert fake_factory["asr-a"].loads == 0


def _sparse_snapshot(data_dir: Path, slug: str, size: int) -> None:
    folder = data_dir / "models" / slug
    folder.mkdir(parents=True)
    with open(folder / "model.bin", "wb") as weights:
        weights.truncate(size)


async def test_the_estimate_before_a_first_load_comes_from_the_snapshot(
    make_settings: Any, fake_factory: FakeFactory, tmp_path: Path
) -> None:
    models = {"big": {"executor": "whisper", "repo": "test/big"}, "tts-a": {"executor": "espeak"}}
    settings = make_settings(models, memory_budget="200M")
    _sparse_snapshot(settings.data_dir, "big", 300 * MIB)
    app = create_app(settings, engine_factory=fake_factory)
    async with asgi_client(app) as client:
        answer = await client.post("/api/ps/big")
        assert answer.status_code == 507
        error = answer.json()["error"]
        assert error["code"] == "model_too_large"
        assert "needs about 424 MiB (estimated)" in error["message"]  # 300 MiB x 1.2 + 64 MiB
        assert (await client.post("/api/ps/tts-a")).status_code == 200
    assert fake_factory["big"].loads == 0


async def test_idle_models_go_before_one_in_use_which_is_never_evicted(
    make_settings: Any, fake_factory: FakeFactory
) -> None:
    for slug in ("asr-a", "asr-b", "tts-a"):
        fake_factory[slug].memory = 40 * MIB
    gate = threading.Event()
    fake_factory["asr-a"].gate = gate
    clock = FakeClock()
    pool = make_pool(make_settings(memory_budget="100M"), fake_factory, clock)
    await use(pool, "asr-a")
    clock.advance(1)
    await use(pool, "asr-b")
    clock.advance(1)

    async def long_request() -> None:
        async with pool.acquire("asr-a") as engine:
            await anyio.to_thread.run_sync(engine.voices)
            await anyio.to_thread.run_sync(engine.transcribe, _request())

    running = asyncio.create_task(long_request())
    await wait_until(lambda: fake_factory["asr-a"].active == 1)
    await use(pool, "tts-a")  # asr-a is the least recently used, but in use: asr-b goes, at once
    assert resident(pool) == {"asr-a", "tts-a"}
    assert fake_factory["asr-a"].unloads == 0
    gate.set()
    await running


async def test_a_model_in_use_is_swapped_only_after_its_requests(
    make_settings: Any, fake_factory: FakeFactory
) -> None:
    """Room for one: the TTS load waits for the running transcription (TALKIES_SWAP_MAX_WAIT=0 bounds only
    the queue, never a running request); the fake engine's own assertion fails if it is unloaded under
    the request."""
    fake_factory["asr-a"].memory = fake_factory["tts-a"].memory = 60 * MIB
    gate = threading.Event()
    fake_factory["asr-a"].gate = gate
    pool = make_pool(make_settings(memory_budget="80M", swap_max_wait=0), fake_factory)
    await use(pool, "asr-a")  # 60 MiB measured; tts-a's first estimate (32 MiB) does not fit beside it
    running = asyncio.create_task(_transcribe(pool, "asr-a"))
    await wait_until(lambda: fake_factory["asr-a"].active == 1)
    speech = asyncio.create_task(use(pool, "tts-a"))
    await asyncio.sleep(0.2)
    assert not speech.done()
    assert fake_factory["asr-a"].unloads == 0
    gate.set()
    await asyncio.gather(running, speech)
    assert resident(pool) == {"tts-a"}


async def _served(pool: Any, slug: str, name: str, order: list[str]) -> None:
    """One request for `slug` (asr-a transcribes, others speak); `name` joins `order` when done."""
    if slug == "asr-a":
        await _transcribe(pool, slug)
    else:
        await use(pool, slug)
    order.append(name)


async def test_swap_serves_the_resident_queue_then_the_accumulated_requests(
    make_settings: Any, fake_factory: FakeFactory
) -> None:
    """Room for one model, requests alternating ASR / TTS: the resident model serves the requests for it
    (queued, and arriving while the TTS requests wait), then one swap serves every TTS request. Without
    fairness each TTS request would evict ASR and the next ASR request evict TTS: a load per request."""
    gate = threading.Event()
    fake_factory["asr-a"].gate = gate
    pool = make_pool(make_settings(max_loaded_models=1, swap_max_wait=30), fake_factory)
    order: list[str] = []

    async def request(slug: str, name: str) -> None:
        await _served(pool, slug, name, order)

    tasks = [asyncio.create_task(request("asr-a", "a1"))]
    await wait_until(lambda: fake_factory["asr-a"].active == 1)
    for i in (2, 3, 4):
        tasks.append(asyncio.create_task(request("tts-a", f"t{i - 1}")))
        await asyncio.sleep(0.02)
        tasks.append(asyncio.create_task(request("asr-a", f"a{i}")))
        await asyncio.sleep(0.02)
    gate.set()
    await asyncio.gather(*tasks)
    assert order[:4] == ["a1", "a2", "a3", "a4"], order
    assert sorted(order[4:]) == ["t1", "t2", "t3"], order
    assert fake_factory["asr-a"].loads == 1
    assert fake_factory["tts-a"].loads == 1


async def test_swap_max_wait_stops_the_resident_from_taking_new_requests(
    make_settings: Any, fake_factory: FakeFactory
) -> None:
    """A request for the resident model arriving while another model waits is served first, until the
    waiting model has waited TALKIES_SWAP_MAX_WAIT; after that the resident takes no new request and is
    swapped out once its running one is done, so a busy model never starves another."""
    gate = threading.Event()
    fake_factory["asr-a"].gate = gate
    pool = make_pool(make_settings(max_loaded_models=1, swap_max_wait=1.0), fake_factory)
    order: list[str] = []

    async def request(slug: str, name: str) -> None:
        await _served(pool, slug, name, order)

    first = asyncio.create_task(request("asr-a", "a1"))
    await wait_until(lambda: fake_factory["asr-a"].active == 1)
    speech = asyncio.create_task(request("tts-a", "t1"))
    await asyncio.sleep(0.05)
    early = asyncio.create_task(request("asr-a", "a2"))  # within the bound: joins the resident's queue
    await asyncio.sleep(1.3)  # past TALKIES_SWAP_MAX_WAIT
    late = asyncio.create_task(request("asr-a", "a3"))  # held off: t1 has waited long enough
    await asyncio.sleep(0.05)
    gate.set()
    await asyncio.gather(first, speech, early, late)
    assert order == ["a1", "a2", "t1", "a3"], order


async def _transcribe(pool: ModelPool, slug: str) -> None:
    async with pool.acquire(slug) as engine:
        await anyio.to_thread.run_sync(engine.transcribe, _request())
