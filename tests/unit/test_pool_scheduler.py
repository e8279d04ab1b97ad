"""Issue 24: the scheduler's one owner, scenario by scenario. Each test is one of the hangs, stalls or
overlaps that the lock-based pool had (numbered as in the issue), with fake engines (tests/fakes.py) and
bounds (asyncio.wait_for) where the old pool waited forever."""

from __future__ import annotations

import asyncio
import threading
from typing import Any

import anyio
import pytest

from talkies.engines.base import EngineContext
from talkies.errors import EngineTimeoutError, LoadTimeoutError, WorkerCrashedError
from talkies.pool import ModelPool
from talkies.registry import ModelSpec
from tests.fakes import FakeClock, FakeEngine, FakeFactory, FakeWorker, wait_until
from tests.unit.test_pool import _request, make_pool, use

pytestmark = pytest.mark.anyio

FOUR = {slug: {"executor": "pocketsphinx"} for slug in ("a", "x", "b", "c")}


def slot(pool: ModelPool, slug: str) -> Any:
    return pool._slots[slug]


async def transcribe(pool: ModelPool, slug: str) -> None:
    async with pool.acquire(slug) as engine:
        await anyio.to_thread.run_sync(engine.transcribe, _request())


async def test_1_a_crash_while_an_unload_waits_never_deadlocks(
    make_settings: Any, fake_factory: FakeFactory
) -> None:
    """a1 runs on asr-a, a2 waits for a turn, /unload waits for asr-a to drain, a1's worker crashes: a2
    loads asr-a again, the unload ends, and a model that is not resident still loads."""
    pool = make_pool(make_settings(max_loaded_models=2, queue_timeout=30), fake_factory)
    crash = asyncio.Event()

    async def a1() -> None:
        async with pool.acquire("asr-a"):
            await crash.wait()
            raise WorkerCrashedError("the worker died")

    first = asyncio.create_task(a1())
    await wait_until(lambda: slot(pool, "asr-a").running == 1)
    second = asyncio.create_task(use(pool, "asr-a"))
    await wait_until(lambda: slot(pool, "asr-a").waiting == 1)
    unload = asyncio.create_task(pool.unload("asr-a"))
    await wait_until(lambda: slot(pool, "asr-a").evicting)
    crash.set()
    with pytest.raises(WorkerCrashedError):
        await first
    await asyncio.wait_for(second, 10)
    await asyncio.wait_for(unload, 10)
    await asyncio.wait_for(use(pool, "asr-b"), 10)
    assert fake_factory["asr-a"].loads == 2
    await pool.close()


async def test_2_an_idle_model_is_evicted_before_a_busy_one(
    make_settings: Any, fake_factory: FakeFactory
) -> None:
    """max_loaded_models=2, a serves one long request and x is idle: b and c load beside a (x, then b go)
    without waiting for a's request, although a was pinned before x was last used."""
    clock = FakeClock()
    settings = make_settings(FOUR, max_loaded_models=2, queue_timeout=5, swap_max_wait=3600)
    pool = make_pool(settings, fake_factory, clock)
    await use(pool, "a")
    clock.advance(1)
    await use(pool, "x")
    clock.advance(1)
    gate = threading.Event()
    fake_factory["a"].gate = gate
    long = asyncio.create_task(transcribe(pool, "a"))
    await wait_until(lambda: fake_factory["a"].active == 1)
    try:
        await asyncio.wait_for(use(pool, "b"), 10)
        assert pool.is_loaded("a")
        assert not pool.is_loaded("x")
        await asyncio.wait_for(use(pool, "c"), 10)
        assert pool.is_loaded("a")
        assert not pool.is_loaded("b")
        assert fake_factory["a"].unloads == 0
    finally:
        gate.set()
    await long
    assert fake_factory.ledger.unloads_under_a_call == []
    await pool.close()


async def test_3_a_waiter_cancelled_during_a_load_keeps_the_load_counted(
    make_settings: Any, fake_factory: FakeFactory
) -> None:
    """max_loaded_models=1: the client that asked for asr-a hangs up while it loads; a request for asr-b
    waits for that load to end and for asr-a to go. Never two models in memory at once."""
    fake_factory["asr-a"].load_delay = 0.5
    pool = make_pool(make_settings(max_loaded_models=1), fake_factory)
    first = asyncio.create_task(use(pool, "asr-a"))
    await wait_until(lambda: fake_factory["asr-a"].loads == 1)
    first.cancel()
    with pytest.raises(asyncio.CancelledError):
        await first
    await asyncio.wait_for(use(pool, "asr-b"), 10)
    assert fake_factory.ledger.max_live == 1
    assert fake_factory["asr-a"].loads == 1
    await pool.close()


async def test_4_a_load_timeout_answers_every_waiter_from_one_load_and_unloads_in_a_thread(
    make_settings: Any, fake_factory: FakeFactory
) -> None:
    fake_factory["asr-a"].load_delay = 1.0
    pool = make_pool(make_settings(load_timeout=0.2, max_queue=10), fake_factory)
    loop_thread = threading.current_thread().name
    waiters = [asyncio.create_task(use(pool, "asr-a")) for _ in range(4)]
    outcomes = await asyncio.wait_for(asyncio.gather(*waiters, return_exceptions=True), 10)
    assert all(isinstance(o, LoadTimeoutError) for o in outcomes), outcomes
    assert "TALKIES_LOAD_TIMEOUT" in str(outcomes[0])
    assert fake_factory["asr-a"].loads == 1
    await wait_until(lambda: fake_factory["asr-a"].unloads == 1)  # once its thread really ended
    assert fake_factory.ledger.unload_threads
    assert loop_thread not in fake_factory.ledger.unload_threads
    fake_factory["asr-a"].load_delay = 0
    await asyncio.wait_for(use(pool, "asr-a"), 10)  # after the back-off, a new load
    assert fake_factory["asr-a"].loads == 2
    await pool.close()


async def test_6_shutdown_unloads_an_engine_only_after_its_call_returns(
    make_settings: Any, fake_factory: FakeFactory
) -> None:
    gate = threading.Event()
    fake_factory["asr-a"].gate = gate
    pool = make_pool(make_settings(unload_wait=30), fake_factory)
    running = asyncio.create_task(transcribe(pool, "asr-a"))
    await wait_until(lambda: fake_factory["asr-a"].active == 1)
    closing = asyncio.create_task(pool.close())
    await wait_until(lambda: pool.owner.closing)
    queued = asyncio.create_task(use(pool, "asr-a"))  # arrives during shutdown: refused, not served
    with pytest.raises(Exception, match="shutting down"):
        await asyncio.wait_for(queued, 10)
    assert fake_factory["asr-a"].unloads == 0
    assert not closing.done()
    gate.set()
    await asyncio.wait_for(running, 10)
    await asyncio.wait_for(closing, 10)
    assert fake_factory["asr-a"].unloads == 1
    assert fake_factory.ledger.unloads_under_a_call == []


class KillableEngine(FakeEngine):
    """A worker engine: `kill` ends the call inside it (it fails as a crash)."""

    killed = False

    def kill(self, reason: str) -> None:
        self.killed = True
        self.crash()
        assert self.behaviour.gate is not None
        self.behaviour.gate.set()


@pytest.mark.parametrize("killable", [False, True])
async def test_6_shutdown_waits_a_bounded_time_then_kills_a_worker_never_unloads_in_process(
    make_settings: Any, fake_factory: FakeFactory, killable: bool
) -> None:
    gate = threading.Event()
    fake_factory["asr-a"].gate = gate
    made: list[FakeEngine] = []

    def factory(spec: ModelSpec, context: EngineContext) -> FakeEngine:
        kind = KillableEngine if killable else FakeEngine
        made.append(kind(spec, context, fake_factory[spec.slug]))
        return made[-1]

    settings = make_settings(unload_wait=0.2)
    assert settings.models_file is not None
    from talkies.registry import load_registry

    pool = ModelPool(load_registry(settings.models_file), settings, engine_factory=factory)
    running = asyncio.create_task(transcribe(pool, "asr-a"))
    await wait_until(lambda: fake_factory["asr-a"].active == 1)
    await asyncio.wait_for(pool.close(), 10)  # bounded although the call goes on
    if killable:
        assert isinstance(made[0], KillableEngine)
        assert made[0].killed
    else:
        assert fake_factory["asr-a"].unloads == 0  # an in-process engine is left, never freed under a call
    gate.set()
    await asyncio.gather(running, return_exceptions=True)
    assert fake_factory.ledger.unloads_under_a_call == []


async def test_7_the_sweeper_never_waits_for_a_model_pinned_after_it_chose(
    make_settings: Any, fake_factory: FakeFactory
) -> None:
    """The sweep decides and marks in one step of the owner: a request for the model that arrives while
    another model loads is served (on a fresh load if the sweep took it), and the sweep never waits for it."""
    clock = FakeClock()
    pool = make_pool(make_settings(model_ttl=10, max_loaded_models=3), fake_factory, clock)
    await use(pool, "asr-a")
    clock.advance(10)
    fake_factory["asr-b"].load_delay = 0.5
    loading = asyncio.create_task(use(pool, "asr-b"))
    await wait_until(lambda: fake_factory["asr-b"].loads == 1)
    sweep = asyncio.create_task(pool.sweep_once())
    gate = threading.Event()
    fake_factory["asr-a"].gate = gate
    request = asyncio.create_task(transcribe(pool, "asr-a"))
    await wait_until(lambda: fake_factory["asr-a"].active == 1)
    try:
        await asyncio.wait_for(sweep, 10)  # while the request still runs
    finally:
        gate.set()
    await asyncio.wait_for(asyncio.gather(request, loading), 10)
    assert pool.is_loaded("asr-a")
    assert fake_factory.ledger.unloads_under_a_call == []
    await pool.close()


async def test_7_a_worker_killed_for_a_sibling_slugs_timeout_reloads_instead_of_failing(
    make_settings: Any, fake_factory: FakeFactory
) -> None:
    worker = FakeWorker()
    fake_factory["asr-a"].worker = fake_factory["asr-b"].worker = worker
    pool = make_pool(make_settings(max_loaded_models=3), fake_factory)
    await use(pool, "asr-a")
    await use(pool, "asr-b")

    async def timed_out() -> None:
        async with pool.acquire("asr-a"):
            worker.alive = False  # what killing the shared worker for this call's timeout does
            raise EngineTimeoutError("model 'asr-a': no progress (TALKIES_ENGINE_TIMEOUT)")

    with pytest.raises(EngineTimeoutError):
        await timed_out()
    fake_factory["asr-b"].worker = fake_factory["asr-a"].worker = FakeWorker()  # the next worker
    async with pool.acquire("asr-b") as engine:
        assert engine.alive
    assert fake_factory["asr-b"].loads == 2
    await pool.close()
