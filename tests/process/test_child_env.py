"""A `process` child's environment is an allow-list: talkies' secrets never reach it, nor what it prints
(/healthz names failed models only; the reason, with the child's output, is behind the token)."""

from __future__ import annotations

import ast
import logging
from typing import Any

import httpx
import pytest

from talkies.errors import ConfigError
from talkies.settings import load_settings
from tests.process.conftest import CHILD_MARK, PY, script_model

pytestmark = pytest.mark.slow

TOKEN = "tok-0f1e2d3c4b5a"
OTHER_SECRET = "sk-another-secret-9876"
NOWHERE = "http://127.0.0.1:9"  # never reached: the command exits first
PRINT_ENV = "import os, sys; print('ENV=' + repr(dict(os.environ)), flush=True); sys.exit(3)"


def _printed_env(text: str) -> dict[str, str]:
    line = next(line for line in text.splitlines() if "ENV={" in line)
    parsed = ast.literal_eval(line.split("ENV=", 1)[1])
    assert isinstance(parsed, dict)
    return parsed


def test_child_gets_no_secret_and_healthz_names_only(
    outer: Any, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setenv("TALKIES_AUTH_TOKEN", TOKEN)
    monkeypatch.setenv("TALKIES_LOG_LEVEL", "info")
    monkeypatch.setenv("MY_SERVICE_API_KEY", OTHER_SECRET)
    monkeypatch.setenv("LC_MESSAGES", "C")
    models = {
        "env-printer": script_model(cmd=[PY, "-c", PRINT_ENV], proxy=NOWHERE, env=["GIVEN_BY_ENTRY=yes"])
    }
    caplog.set_level(logging.INFO, logger="talkies.process")
    auth = {"Authorization": f"Bearer {TOKEN}"}
    with outer(models) as url, httpx.Client(base_url=url, timeout=60, headers=auth) as client:
        answer = client.post("/v1/audio/speech", json={"model": "env-printer", "input": "hello"})
        assert answer.status_code == 503
        health = httpx.get(url + "/healthz", timeout=30)  # no token: anyone who reaches the port
        ps = client.get("/api/ps").json()
        card = client.get("/v1/models/env-printer").json()
        refused = httpx.get(url + "/api/ps", timeout=30)
    assert refused.status_code == 401
    assert health.json()["failed"] == ["env-printer"]
    assert TOKEN not in health.text
    assert "ENV=" not in health.text

    env = _printed_env(ps["failed"]["env-printer"])  # the reason, with the child's output, behind auth
    assert env == _printed_env(card["load_error"])
    assert TOKEN not in repr(env)
    assert OTHER_SECRET not in repr(env)
    assert [name for name in env if name.startswith("TALKIES_")] == [CHILD_MARK]  # passed on purpose
    assert env["GIVEN_BY_ENTRY"] == "yes"
    assert env["LC_MESSAGES"] == "C"
    assert "PATH" in env
    assert "MY_SERVICE_API_KEY" not in env
    logged = "\n".join(record.getMessage() for record in caplog.records)
    assert "ENV={" in logged  # the child's output reached the log ...
    assert TOKEN not in logged  # ... without the token
    assert OTHER_SECRET not in logged


def test_child_env_passes_named_variables(outer: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MY_SERVICE_API_KEY", OTHER_SECRET)
    models = {"env-printer": script_model(cmd=[PY, "-c", PRINT_ENV], proxy=NOWHERE)}
    with outer(models, child_env=(CHILD_MARK, "MY_SERVICE_*")) as url, httpx.Client(base_url=url) as client:
        assert client.post("/v1/audio/speech", json={"model": "env-printer", "input": "x"}).status_code == 503
        env = _printed_env(client.get("/api/ps").json()["failed"]["env-printer"])
    assert env["MY_SERVICE_API_KEY"] == OTHER_SECRET


@pytest.mark.parametrize("value", ["TALKIES_AUTH_TOKEN", "TALKIES_*", "*", "TALKIES_AUTH*", "bad name"])
def test_child_env_refuses_secrets(value: str) -> None:
    with pytest.raises(ConfigError, match="TALKIES_CHILD_ENV"):
        load_settings(child_env=value)
