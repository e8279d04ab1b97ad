"""The honest lifecycle of a request in the pool (issue 19 item 1): crashes and timeouts release every
permit, one load per model whatever its waiters do, a disconnect never frees a slot under a running call."""

from __future__ import annotations

import asyncio
import threading
from typing import Any

import pytest

from talkies.errors import EngineTimeoutError, WorkerCrashedError
from talkies.services.blocking import BlockingSteps
from tests.fakes import FakeFactory, wait_until
from tests.unit.test_pool import make_pool, use

pytestmark = pytest.mark.anyio


@pytest.mark.parametrize("failure", [WorkerCrashedError, EngineTimeoutError])
async def test_a_crash_while_a_second_request_waits_releases_its_permit(
    make_settings: Any, fake_factory: FakeFactory, failure: type[Exception]
) -> None:
    pool = make_pool(make_settings(), fake_factory)  # max_concurrency 1
    crash = asyncio.Event()
    outcomes: list[str] = []

    async def first() -> None:
        async with pool.acquire("asr-a"):
            await crash.wait()
            raise failure("the worker died")

    async def second() -> None:
        async with pool.acquire("asr-a") as engine:
            outcomes.append("second ran on a loaded engine" if engine.loaded else "not loaded")

    running = asyncio.create_task(first())
    await wait_until(lambda: pool.ps() != [] and pool.ps()[0]["in_flight"] == 1)
    waiting = asyncio.create_task(second())
    await wait_until(lambda: pool.ps()[0]["queued"] == 1)
    crash.set()
    with pytest.raises(failure):
        await running
    await asyncio.wait_for(waiting, 10)
    assert outcomes == ["second ran on a loaded engine"]
    await asyncio.wait_for(use(pool, "asr-a"), 10)  # a third request: the permit was not leaked
    assert fake_factory["asr-a"].loads == 2  # the crash dropped the engine; the waiter loaded it again
    await pool.close()


async def test_a_waiter_cancelled_during_a_slow_load_does_not_cause_a_second_load(
    make_settings: Any, fake_factory: FakeFactory
) -> None:
    fake_factory["asr-a"].load_delay = 1.0
    pool = make_pool(make_settings(), fake_factory)
    first = asyncio.create_task(use(pool, "asr-a"))
    await wait_until(lambda: fake_factory["asr-a"].loads == 1)
    second = asyncio.create_task(use(pool, "asr-a"))
    await asyncio.sleep(0.05)
    first.cancel()  # the client that started the load hangs up
    with pytest.raises(asyncio.CancelledError):
        await first
    await asyncio.wait_for(second, 10)
    assert fake_factory["asr-a"].loads == 1
    assert len(fake_factory.engines) == 1  # never two copies of the model
    await pool.close()


async def test_a_cancelled_request_keeps_its_permit_and_pin_until_the_engine_returns(
    make_settings: Any, fake_factory: FakeFactory
) -> None:
    """A disconnect cancels the request task while the engine runs: no second call may start on the model
    (max_concurrency 1) and the model may not be evicted for another until that call has returned."""
    gate = threading.Event()
    fake_factory["asr-a"].gate = gate
    pool = make_pool(make_settings(max_loaded_models=1), fake_factory)

    async def transcribe() -> None:
        async with pool.acquire("asr-a") as engine:
            await BlockingSteps().run(engine.transcribe, _request())

    hung_up = asyncio.create_task(transcribe())
    await wait_until(lambda: fake_factory["asr-a"].active == 1)
    hung_up.cancel()
    await asyncio.sleep(0.2)
    assert not hung_up.done()  # it waits for the engine call to return
    same = asyncio.create_task(transcribe())
    other = asyncio.create_task(use(pool, "asr-b"))  # needs asr-a evicted (one resident model)
    await asyncio.sleep(0.3)
    assert fake_factory["asr-a"].max_active == 1
    assert fake_factory["asr-a"].unloads == 0
    assert fake_factory["asr-b"].loads == 0
    gate.set()
    with pytest.raises(asyncio.CancelledError):
        await hung_up
    await asyncio.wait_for(asyncio.gather(same, other), 10)
    assert fake_factory["asr-a"].max_active == 1
    await pool.close()


def _request() -> Any:
    import numpy as np

    from talkies.engines.base import TranscriptionRequest

    return TranscriptionRequest(audio=np.zeros(1600, dtype=np.float32))


def test_an_engine_timeout_answers_504_with_its_own_type_and_code() -> None:
    from talkies.api.errors import error_response

    response = error_response(EngineTimeoutError("model 'x': the engine made no progress for 600s"))
    assert response.status_code == 504
    body = bytes(response.body).decode()
    assert '"type":"timeout_error"' in body
    assert '"code":"engine_timeout"' in body
