"""GET /metrics (issue 19, item 7): every counter moves with what it counts, gauges read the pool, the
endpoint sits behind auth unless TALKIES_METRICS_PUBLIC, and each app has a registry of its own."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from typing import Any

import anyio
import httpx
import pytest

from talkies.api.app import create_app
from talkies.engines.base import AudioChunk, EngineContext, SpeechRequest
from talkies.errors import EngineTimeoutError, WorkerCrashedError
from talkies.registry import ModelSpec
from tests.fakes import FakeEngine, FakeFactory
from tests.server import asgi_client

pytestmark = pytest.mark.anyio
# A base dependency; an environment installed before it was added skips (CI installs it)
parser = pytest.importorskip("prometheus_client.parser")

TOKEN = "metrics-token"
SPEECH = {"model": "tts-a", "input": "hello"}


async def scrape(client: httpx.AsyncClient) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    """Sample name + labels -> value."""
    response = await client.get("/metrics")
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/plain")
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in parser.text_string_to_metric_families(response.text)
        for sample in family.samples
    }


def value(samples: dict[tuple[str, frozenset[tuple[str, str]]], float], name: str, **labels: str) -> float:
    return samples.get((name, frozenset(labels.items())), 0.0)


async def test_request_counters_and_latency_move_with_the_requests(
    make_settings: Any, fake_factory: FakeFactory
) -> None:
    app = create_app(make_settings(), engine_factory=fake_factory)
    async with asgi_client(app) as client:
        before = await scrape(client)
        for _ in range(3):
            assert (await client.post("/v1/audio/speech", json=SPEECH)).status_code == 200
        missing = await client.post("/v1/audio/speech", json={"model": "nope", "input": "x"})
        assert missing.status_code == 404
        assert (await client.get("/v1/models/tts-a")).status_code == 200
        assert (await client.get("/no/such/route")).status_code == 404
        after = await scrape(client)
    speech = {"endpoint": "/v1/audio/speech", "model": "tts-a"}
    assert value(before, "talkies_requests_total", **speech, status="200") == 0
    assert value(after, "talkies_requests_total", **speech, status="200") == 3
    assert value(after, "talkies_request_duration_seconds_count", **speech) == 3
    assert value(after, "talkies_request_duration_seconds_bucket", **speech, le="+Inf") == 3
    unknown = {"endpoint": "/v1/audio/speech", "model": "", "status": "404"}
    assert value(after, "talkies_requests_total", **unknown) == 1, "an unknown model is not a label"
    card = {"endpoint": "/v1/models/{model_id:path}", "model": "", "status": "200"}
    assert value(after, "talkies_requests_total", **card) == 1, "a route's template, not its path"
    assert value(after, "talkies_requests_total", endpoint="other", model="", status="404") == 1
    assert value(after, "talkies_requests_total", endpoint="/metrics", model="", status="200") == 1


async def test_loads_unloads_and_evictions_are_counted(make_settings: Any, fake_factory: FakeFactory) -> None:
    app = create_app(make_settings(max_loaded_models=1), engine_factory=fake_factory)
    async with asgi_client(app) as client:
        assert (await client.post("/v1/audio/speech", json=SPEECH)).status_code == 200
        loaded = await scrape(client)
        assert (await client.post("/api/ps/asr-a")).status_code == 200  # evicts tts-a
        assert (await client.delete("/api/ps/asr-a")).status_code == 200
        after = await scrape(client)
    assert value(loaded, "talkies_model_loads_total", model="tts-a", result="ok") == 1
    assert value(loaded, "talkies_model_load_duration_seconds_count", model="tts-a") == 1
    assert value(loaded, "talkies_model_loaded", model="tts-a") == 1
    assert value(loaded, "talkies_model_loaded", model="asr-a") == 0
    assert value(after, "talkies_model_evictions_total", model="tts-a") == 1
    assert value(after, "talkies_model_evictions_total", model="asr-a") == 0
    assert value(after, "talkies_model_unloads_total", model="tts-a") == 1
    assert value(after, "talkies_model_unloads_total", model="asr-a") == 1
    assert value(after, "talkies_model_loads_total", model="asr-a", result="ok") == 1
    assert value(after, "talkies_model_loaded", model="tts-a") == 0


async def test_a_failed_load_is_counted(make_settings: Any, fake_factory: FakeFactory) -> None:
    fake_factory["tts-a"].load_error = RuntimeError("weights are corrupt")
    app = create_app(make_settings(), engine_factory=fake_factory)
    async with asgi_client(app) as client:
        assert (await client.post("/v1/audio/speech", json=SPEECH)).status_code == 503
        after = await scrape(client)
    assert value(after, "talkies_model_loads_total", model="tts-a", result="error") == 1
    assert value(after, "talkies_model_loads_total", model="tts-a", result="ok") == 0
    refused = {"endpoint": "/v1/audio/speech", "model": "tts-a", "status": "503"}
    assert value(after, "talkies_requests_total", **refused) == 1


class _FailingEngine(FakeEngine):
    error: Exception = WorkerCrashedError("the worker died")

    def synthesize(self, request: SpeechRequest) -> Iterator[AudioChunk]:
        raise self.error


@pytest.mark.parametrize(
    ("error", "metric", "labels"),
    [
        (WorkerCrashedError("the worker died"), "talkies_model_crashes_total", {}),
        (EngineTimeoutError("no progress"), "talkies_model_timeouts_total", {"kind": "engine"}),
    ],
)
async def test_crashes_and_engine_timeouts_are_counted(
    make_settings: Any, fake_factory: FakeFactory, error: Exception, metric: str, labels: dict[str, str]
) -> None:
    def factory(spec: ModelSpec, context: EngineContext) -> FakeEngine:
        engine = _FailingEngine(spec, context, fake_factory[spec.slug])
        engine.error = error
        return engine

    app = create_app(make_settings(), engine_factory=factory)
    async with asgi_client(app) as client:
        failed = await client.post("/v1/audio/speech", json=SPEECH)
        after = await scrape(client)
    assert failed.status_code >= 500
    assert value(after, metric, model="tts-a", **labels) == 1
    assert value(after, "talkies_model_loaded", model="tts-a") == 0, "the model was dropped"


async def test_in_flight_and_queue_depth_per_model(make_settings: Any, fake_factory: FakeFactory) -> None:
    gate = threading.Event()
    fake_factory["tts-a"].gate = gate
    app = create_app(make_settings(), engine_factory=fake_factory)  # max_concurrency 1
    async with asgi_client(app, timeout=30) as client, anyio.create_task_group() as tasks:
        statuses: list[int] = []

        async def speak() -> None:
            statuses.append((await client.post("/v1/audio/speech", json=SPEECH)).status_code)

        tasks.start_soon(speak)
        tasks.start_soon(speak)
        # One request in the engine (held at the gate), the other queued behind it. Both figures are
        # awaited: a depth of 1 alone is also what the first request shows while its model loads.
        with anyio.fail_after(20):
            while True:
                busy = await scrape(client)
                running = value(busy, "talkies_model_in_flight", model="tts-a")
                if running == 1 and value(busy, "talkies_model_queue_depth", model="tts-a") == 1:
                    break
                await anyio.sleep(0.02)
        gate.set()
    assert value(busy, "talkies_model_in_flight", model="asr-a") == 0
    assert value(busy, "talkies_requests_in_flight") == 2
    assert statuses == [200, 200]


@pytest.mark.parametrize(("public", "expected"), [(False, 401), (True, 200)])
async def test_metrics_sit_behind_auth_unless_public(
    make_settings: Any, fake_factory: FakeFactory, public: bool, expected: int
) -> None:
    app = create_app(make_settings(auth_token=TOKEN, metrics_public=public), engine_factory=fake_factory)
    async with asgi_client(app) as client:
        anonymous = await client.get("/metrics")
        with_token = await client.get("/metrics", headers={"authorization": f"Bearer {TOKEN}"})
        speech = await client.post("/v1/audio/speech", json=SPEECH)
    assert anonymous.status_code == expected
    assert with_token.status_code == 200
    assert speech.status_code == 401, "TALKIES_METRICS_PUBLIC opens /metrics only"


async def test_each_app_counts_on_its_own(make_settings: Any, fake_factory: FakeFactory) -> None:
    first = create_app(make_settings(), engine_factory=fake_factory)
    second = create_app(make_settings(), engine_factory=fake_factory)
    async with asgi_client(first) as one, asgi_client(second) as two:
        assert (await one.post("/v1/audio/speech", json=SPEECH)).status_code == 200
        counted = await scrape(one)
        untouched = await scrape(two)
    speech = {"endpoint": "/v1/audio/speech", "model": "tts-a", "status": "200"}
    assert value(counted, "talkies_requests_total", **speech) == 1
    assert value(untouched, "talkies_requests_total", **speech) == 0
