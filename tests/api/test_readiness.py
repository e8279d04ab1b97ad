"""GET /readyz beside /healthz, and what a draining server answers (issue 19, item 6).

The signal path itself (SIGTERM to a real `talkies serve`) is tested in tests/live/test_shutdown.py; here the
app's side: readiness before start-up, once started, and while draining.
"""

from __future__ import annotations

import threading
from typing import Any

import anyio
import httpx
import pytest

from talkies.api.app import create_app
from talkies.api.lifecycle import Lifecycle
from talkies.healthcheck import probe
from tests.fakes import FakeFactory
from tests.server import asgi_client, serve

pytestmark = pytest.mark.anyio

TOKEN = "readiness-token"


async def test_readyz_answers_200_once_started(make_settings: Any, fake_factory: FakeFactory) -> None:
    app = create_app(make_settings(), engine_factory=fake_factory)
    async with asgi_client(app) as client:
        ready = await client.get("/readyz")
        health = await client.get("/healthz")
    assert ready.status_code == 200
    assert ready.json() == {"ready": True}
    assert health.status_code == 200


async def test_readyz_answers_503_before_the_lifespan_started(
    make_settings: Any, fake_factory: FakeFactory
) -> None:
    app = create_app(make_settings(), engine_factory=fake_factory)
    transport = httpx.ASGITransport(app=app)  # no lifespan run: as if preloads were still going
    async with httpx.AsyncClient(transport=transport, base_url="http://localhost") as client:
        ready = await client.get("/readyz")
    assert ready.status_code == 503
    assert ready.json()["reason"] == "starting"
    assert "preloading" in ready.json()["detail"]


async def test_preloads_finish_before_the_server_is_ready(
    make_settings: Any, fake_factory: FakeFactory
) -> None:
    app = create_app(make_settings(preload=("tts-a",)), engine_factory=fake_factory)
    async with asgi_client(app) as client:
        assert (await client.get("/readyz")).status_code == 200
        rows = (await client.get("/api/ps")).json()["models"]
    assert [r["model"] for r in rows] == ["tts-a"]


async def test_a_draining_server_refuses_new_work_but_answers_its_probes(
    make_settings: Any, fake_factory: FakeFactory
) -> None:
    app = create_app(make_settings(auth_token=TOKEN), engine_factory=fake_factory)
    lifecycle: Lifecycle = app.state.lifecycle
    auth = {"authorization": f"Bearer {TOKEN}"}
    async with asgi_client(app, headers=auth) as client:
        lifecycle.begin_drain()
        ready = await client.get("/readyz")
        health = await client.get("/healthz")
        metrics = await client.get("/metrics")
        speech = await client.post("/v1/audio/speech", json={"model": "tts-a", "input": "hello"})
        listing = await client.get("/v1/models")
    assert ready.status_code == 503
    assert ready.json()["reason"] == "draining"
    assert ready.headers["retry-after"]
    assert health.status_code == 200, "liveness stays up while the server drains"
    assert metrics.status_code in (200, 503)  # 503: prometheus-client missing (an old environment)
    assert "shutting_down" not in metrics.text
    for refused in (speech, listing):
        assert refused.status_code == 503
        error = refused.json()["error"]
        assert error["code"] == "shutting_down"
        assert error["type"] == "service_unavailable_error"
        assert refused.json()["detail"] == error["message"]
        assert int(refused.headers["retry-after"]) > 0
        assert refused.headers["connection"] == "close"
        assert refused.headers["x-request-id"]  # logged like every other request
    assert fake_factory["tts-a"].calls == 0, "a refused request never reached the engine"


async def test_requests_in_flight_are_counted_and_probes_are_not(
    make_settings: Any, fake_factory: FakeFactory
) -> None:
    gate = threading.Event()
    fake_factory["tts-a"].gate = gate
    app = create_app(make_settings(), engine_factory=fake_factory)
    lifecycle: Lifecycle = app.state.lifecycle
    async with asgi_client(app, timeout=30) as client, anyio.create_task_group() as tasks:
        statuses: list[int] = []

        async def speak() -> None:
            response = await client.post("/v1/audio/speech", json={"model": "tts-a", "input": "hello"})
            statuses.append(response.status_code)

        tasks.start_soon(speak)
        with anyio.fail_after(20):
            while True:
                if fake_factory["tts-a"].active:
                    break
                await anyio.sleep(0.01)
        await client.get("/healthz")
        await client.get("/readyz")
        assert lifecycle.in_flight == 1
        lifecycle.begin_drain()
        assert (await client.get("/readyz")).json()["in_flight"] == 1
        gate.set()
    assert statuses == [200], "a request in flight when the drain began still completes"
    assert lifecycle.in_flight == 0


@pytest.mark.parametrize("path", ["/readyz", "/healthz"])
async def test_probes_need_no_token_and_take_any_host(
    make_settings: Any, fake_factory: FakeFactory, path: str
) -> None:
    app = create_app(make_settings(auth_token=TOKEN), engine_factory=fake_factory)
    async with asgi_client(app) as client:
        response = await client.get(path, headers={"host": "10.1.2.3:8000"})  # a kubelet's pod-IP probe
    assert response.status_code == 200


def test_the_container_healthcheck_follows_readiness(make_settings: Any, fake_factory: FakeFactory) -> None:
    """`python -m talkies.healthcheck` (the images' HEALTHCHECK) passes while ready, fails while draining,
    and sends the token (harmless: /readyz needs none)."""
    app = create_app(make_settings(auth_token=TOKEN), engine_factory=fake_factory)
    with serve(app) as url:
        port = int(url.rsplit(":", 1)[1])
        assert probe(port, TOKEN) == (True, "/readyz: 200")
        app.state.lifecycle.begin_drain()
        assert probe(port, TOKEN) == (False, "/readyz: 503")
