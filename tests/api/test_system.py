from __future__ import annotations

import importlib.util
import logging
from pathlib import Path
from typing import Any

import openai
import pytest
from fastapi import FastAPI

from talkies.api.app import create_app
from talkies.errors import ConfigError
from talkies.settings import load_settings
from tests.api.audio_helpers import silence, write_wav
from tests.conftest import REPO_ROOT
from tests.fakes import FakeFactory
from tests.server import asgi_client, serve

pytestmark = pytest.mark.anyio


def make_app(make_settings: Any, factory: FakeFactory, **overrides: Any) -> FastAPI:
    return create_app(make_settings(**overrides), engine_factory=factory)


@pytest.mark.parametrize("registry", ["models.json", "models-cpu.json"])
async def test_boots_on_shipped_registry(registry: str, tmp_path: Path) -> None:
    settings = load_settings(models_file=REPO_ROOT / registry, data_dir=tmp_path, sweeper_interval=0)
    app = create_app(settings)
    async with asgi_client(app) as client:
        health = (await client.get("/healthz")).json()
        models = (await client.get("/v1/models")).json()
        ps = (await client.get("/api/ps")).json()
    assert health["ok"] is True
    assert health["device"] == "cpu"
    assert "whisper-large-v3" in health["models"]
    assert models["object"] == "list"
    assert {m["modality"] for m in models["data"]} == {"asr", "tts", "diarization"}
    assert ps["models"] == []
    assert ps["memory"]["used_bytes"] == 0


async def test_models_list_and_get(make_settings: Any, fake_factory: FakeFactory) -> None:
    app = make_app(make_settings, fake_factory)
    async with asgi_client(app) as client:
        data = (await client.get("/v1/models")).json()["data"]
        assert [m["id"] for m in data] == ["asr-a", "asr-b", "tts-a"]
        one = (await client.get("/v1/models/tts-a")).json()
        assert one["modality"] == "tts"
        assert one["object"] == "model"
        missing = await client.get("/v1/models/nope")
    assert missing.status_code == 404
    body = missing.json()
    assert body["detail"] == body["error"]["message"]
    assert body["error"]["type"] == "not_found_error"
    assert body["error"]["code"] == "model_not_found"


async def test_unavailable_model_listed_with_reason(
    make_settings: Any, fake_factory: FakeFactory, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    wav = write_wav(tmp_path / "one.wav", [silence(1.0)]).read_bytes()
    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == "nemo" else real(name, *a)
    )
    models = {"canary": {"executor": "canary_multitask", "repo": "nvidia/canary-180m-flash"}}
    app = make_app(make_settings, fake_factory, models=models)
    async with asgi_client(app) as client:
        card = (await client.get("/v1/models/canary")).json()
        response = await client.post(
            "/v1/audio/transcriptions",
            data={"model": "canary"},
            files={"file": ("a.wav", wav, "audio/wav")},
        )
    assert card["available"] is False
    assert "pip install 'talkies[nemo]'" in card["unavailable_reason"]
    assert response.status_code == 503, response.text
    assert "talkies[nemo]" in response.json()["detail"]


async def test_ps_delete_and_unload(make_settings: Any, fake_factory: FakeFactory) -> None:
    models = {"org/asr": {"executor": "pocketsphinx"}, "tts-a": {"executor": "espeak"}}
    app = make_app(make_settings, fake_factory, models=models, max_loaded_models=2)
    pool = app.state.pool
    async with asgi_client(app) as client:
        async with pool.acquire("org/asr"):
            pass
        async with pool.acquire("tts-a"):
            pass
        rows = (await client.get("/api/ps")).json()["models"]
        assert {r["model"] for r in rows} == {"org/asr", "tts-a"}
        assert all(r["idle_seconds"] >= 0 and r["in_flight"] == 0 and r["queued"] == 0 for r in rows)
        deleted = await client.delete("/api/ps/org%2Fasr")  # LiteLLM URL-encodes slashes
        assert deleted.status_code == 200
        assert deleted.json() == {"unloaded": "org/asr"}
        again = await client.delete("/api/ps/org%2Fasr")
        assert again.status_code == 404
        assert (await client.delete("/api/ps/unknown")).status_code == 404
        assert (await client.post("/unload")).json() == {"unloaded": ["tts-a"]}
        assert (await client.get("/api/ps")).json()["models"] == []


async def test_healthz_reports_failed_loads(make_settings: Any, fake_factory: FakeFactory) -> None:
    fake_factory["asr-a"].load_error = RuntimeError("bad snapshot")
    app = make_app(make_settings, fake_factory)
    async with asgi_client(app) as client:
        with pytest.raises(Exception, match="bad snapshot"):
            async with app.state.pool.acquire("asr-a"):
                pass
        health = (await client.get("/healthz")).json()
        ps = (await client.get("/api/ps")).json()
        card = (await client.get("/v1/models/asr-a")).json()
    assert health["failed"] == ["asr-a"]  # the name only: the reason may quote a child's output
    assert "bad snapshot" not in str(health)
    assert "bad snapshot" in ps["failed"]["asr-a"]
    assert "bad snapshot" in card["load_error"]


async def test_unexpected_exception_is_a_json_500_with_request_id(
    make_settings: Any, fake_factory: FakeFactory, caplog: pytest.LogCaptureFixture
) -> None:
    app = make_app(make_settings, fake_factory)

    @app.get("/boom")
    async def boom() -> None:
        raise RuntimeError("kaboom")

    with caplog.at_level(logging.INFO):
        async with asgi_client(app) as client:
            response = await client.get("/boom")
    assert response.status_code == 500
    body = response.json()
    request_id = response.headers["x-request-id"]
    assert request_id in body["detail"]
    assert body["error"]["type"] == "server_error"
    assert any(request_id in r.getMessage() and r.exc_info for r in caplog.records)


async def test_access_log_line(
    make_settings: Any, fake_factory: FakeFactory, caplog: pytest.LogCaptureFixture
) -> None:
    app = make_app(make_settings, fake_factory, auth_token="sekrit-token")
    with caplog.at_level(logging.INFO, logger="talkies.access"):
        async with asgi_client(app) as client:
            await client.delete(
                "/api/ps/asr-a", headers={"Authorization": "Bearer sekrit-token", "X-Request-ID": "abc-1"}
            )
    lines = [r.getMessage() for r in caplog.records if r.name == "talkies.access"]
    assert lines == [lines[0]]
    line = lines[0]
    for part in ("DELETE", "/api/ps/asr-a", "model=asr-a", "status=404", "duration_ms=", "request_id=abc-1"):
        assert part in line
    assert "sekrit-token" not in "".join(r.getMessage() for r in caplog.records)


async def test_unknown_route_uses_the_envelope(make_settings: Any, fake_factory: FakeFactory) -> None:
    async with asgi_client(make_app(make_settings, fake_factory)) as client:
        response = await client.get("/v1/nothing-here")
    assert response.status_code == 404
    assert response.json()["error"]["type"] == "not_found_error"


async def test_preload_loads_at_start(make_settings: Any, fake_factory: FakeFactory) -> None:
    app = make_app(make_settings, fake_factory, preload=("tts-a",))
    async with asgi_client(app) as client:
        rows = (await client.get("/api/ps")).json()["models"]
    assert [r["model"] for r in rows] == ["tts-a"]


def test_preload_must_be_enabled(make_settings: Any, fake_factory: FakeFactory) -> None:
    with pytest.raises(ConfigError, match="TALKIES_PRELOAD"):
        make_app(make_settings, fake_factory, enabled_models=("asr-a",), preload=("tts-a",))


def test_openai_client_lists_models(make_settings: Any, fake_factory: FakeFactory) -> None:
    app = make_app(make_settings, fake_factory)
    with serve(app) as base_url:
        client = openai.OpenAI(base_url=f"{base_url}/v1", api_key="unused")
        ids = [m.id for m in client.models.list()]
        assert ids == ["asr-a", "asr-b", "tts-a"]
        model = client.models.retrieve("asr-a")
        assert model.id == "asr-a"
        with pytest.raises(openai.NotFoundError) as info:
            client.models.retrieve("nope")
    assert "not found" in str(info.value)
