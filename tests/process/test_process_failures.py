"""The process executor against a script server: failures, macros, model names, limits, listing."""

from __future__ import annotations

import base64
import hashlib
import json
import os
import subprocess
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import psutil
import pytest

from talkies.engines.process.command import free_port
from tests.process.conftest import (
    PY,
    SCRIPT,
    UPSTREAM,
    our_children,
    pid_gone,
    ps_row,
    script_model,
    wait_for,
)

Outer = Callable[..., Any]


def engine_url(client: httpx.Client, model: str) -> str:
    """Where the script server of `model` listens (its pid's listening port)."""
    row = ps_row(client, model)
    assert row is not None
    assert row["loaded"]
    ports = [c.laddr.port for c in psutil.Process(row["pid"]).net_connections() if c.status == "LISTEN"]
    return f"http://127.0.0.1:{ports[0]}"


def test_never_healthy_fails_the_load_with_the_servers_output(outer: Outer) -> None:
    models = {"sick": script_model(mode="never-healthy", healthCheckTimeout=1.5)}
    with outer(models) as url, httpx.Client(base_url=url, timeout=60) as client:
        answer = client.post("/v1/audio/speech", json={"model": "sick", "input": "hello"})
        assert answer.status_code == 503
        detail = answer.json()["detail"]
        assert "not healthy after 1.5s (healthCheckTimeout" in detail
        assert "answered 503" in detail
        assert "mode never-healthy on port" in detail  # the child's own output
        assert ps_row(client, "sick") is None
        assert "sick" in client.get("/healthz").json()["failed"]


def test_a_command_that_exits_at_once_fails_with_its_output(outer: Outer) -> None:
    models = {"typo": script_model(cmd=[PY, SCRIPT], proxy="http://127.0.0.1:9")}  # no --port: exits 2
    with outer(models) as url, httpx.Client(base_url=url, timeout=60) as client:
        answer = client.post("/v1/audio/speech", json={"model": "typo", "input": "hello"})
        assert answer.status_code == 503
        assert "exited (code 2) while starting" in answer.json()["detail"]
        assert "the following arguments are required: --port" in answer.json()["detail"]
        missing = {"nope": script_model(cmd=["/no/such/server", "--port", "${PORT}"])}
    with outer(missing) as url, httpx.Client(base_url=url, timeout=60) as client:
        answer = client.post("/v1/audio/speech", json={"model": "nope", "input": "hello"})
        assert answer.status_code == 503
        assert "cannot start '/no/such/server'" in answer.json()["detail"]


def test_a_server_dying_mid_request_answers_502_and_the_next_request_restarts_it(
    outer: Outer, tmp_path: Path
) -> None:
    flag = tmp_path / "die"
    # The first server instance dies on its first request; the restarted one (flag file gone) answers.
    cmd = (
        f"sh -c 'if [ -e {flag} ]; then rm {flag}; exec {PY} {SCRIPT} --port $0 --mode die-on-request; "
        f"else exec {PY} {SCRIPT} --port $0; fi' ${{PORT}}"
    )
    flag.touch()
    with outer({"flaky": script_model(cmd=cmd)}) as url, httpx.Client(base_url=url, timeout=60) as client:
        answer = client.post("/v1/audio/speech", json={"model": "flaky", "input": "hello"})
        assert answer.status_code == 502, answer.text
        assert "its server exited during the request" in answer.json()["detail"]
        assert answer.json()["error"]["type"] == "upstream_error"
        wait_for(lambda: (ps_row(client, "flaky") or {"loaded": True})["loaded"] is False)
        again = client.post("/v1/audio/speech", json={"model": "flaky", "input": "hello"})
        assert again.status_code == 200
        assert ps_row(client, "flaky")["loaded"]  # type: ignore[index]


def test_a_server_ignoring_sigterm_is_killed_after_the_grace(
    outer: Outer, caplog: pytest.LogCaptureFixture
) -> None:
    models = {"stubborn": script_model(mode="ignore-term", unloadTimeout=1)}
    with outer(models) as url, httpx.Client(base_url=url, timeout=60) as client:
        assert client.post("/v1/audio/speech", json={"model": "stubborn", "input": "x"}).status_code == 200
        pid = ps_row(client, "stubborn")["pid"]  # type: ignore[index]
        with caplog.at_level("INFO", logger="talkies.process"):
            assert client.delete("/api/ps/stubborn").status_code == 200
        assert pid_gone(pid), "DELETE /api/ps returns once the child is reaped"
        assert "stubborn: still running 1s after the stop request; killing it" in caplog.text
        assert "stubborn: stopped (code -9)" in caplog.text


def test_the_servers_output_is_in_our_log_under_its_model_id(
    outer: Outer, caplog: pytest.LogCaptureFixture
) -> None:
    logged = caplog.at_level("INFO", logger="talkies.process")
    with logged, outer({"chatty": script_model()}) as url, httpx.Client(base_url=url, timeout=60) as client:
        assert client.post("/v1/audio/speech", json={"model": "chatty", "input": "x"}).status_code == 200
        pid = ps_row(client, "chatty")["pid"]  # type: ignore[index]
        wait_for(lambda: '"POST /v1/audio/speech HTTP/1.1" 200' in caplog.text)
    lines = [r.getMessage() for r in caplog.records if r.name == "talkies.process"]
    assert f"chatty| script server pid {pid} mode ok on port" in "\n".join(lines)
    assert any(line.startswith("chatty| request: ") and "/v1/audio/speech" in line for line in lines)


def test_cmd_stop_runs_with_pid(outer: Outer, tmp_path: Path) -> None:
    marker = tmp_path / "stopped"
    models = {"polite": script_model(cmdStop=f"sh -c 'echo $0 > {marker}; kill -TERM $0' ${{PID}}")}
    with outer(models) as url, httpx.Client(base_url=url, timeout=60) as client:
        assert client.post("/v1/audio/speech", json={"model": "polite", "input": "x"}).status_code == 200
        pid = ps_row(client, "polite")["pid"]  # type: ignore[index]
        client.delete("/api/ps/polite")
        assert marker.read_text().strip() == str(pid)
        assert pid_gone(pid)


def test_use_model_name_is_what_the_server_sees_in_json_multipart_and_query(outer: Outer) -> None:
    models = {
        "speaker": script_model(useModelName="tts-1"),
        "listener": script_model("asr", useModelName="whisper-1"),
        "plain": script_model("asr"),
    }
    form = [("file", ("a.wav", b"RIFF-not-really-audio", "audio/wav")), ("model", (None, "listener"))]
    with outer(models, max_loaded_models=3) as url, httpx.Client(base_url=url, timeout=60) as client:
        raw = b'{"input": "hi",\n "model" : "speaker", "speed": 1.0e0}'  # spacing and number form kept
        speech = client.post("/v1/audio/speech", content=raw, headers={"content-type": "application/json"})
        assert speech.status_code == 200
        assert base64.b64decode(speech.headers["x-received"]) == raw.replace(b'"speaker"', b'"tts-1"')
        heard = client.post("/v1/audio/transcriptions", files=form, data={"language": "en"})
        assert heard.json()["model"] == "whisper-1"
        voices = client.get("/v1/audio/voices", params={"model": "speaker"})
        assert voices.json()["model"] == ["tts-1"]
        # without useModelName the body reaches the server byte for byte (same length and digest)
        plain = [("file", ("b.wav", os.urandom(300_000), "audio/wav")), ("model", (None, "plain"))]
        request = httpx.Request("POST", f"{url}/v1/audio/translations", files=plain, data={"prompt": "p"})
        sent = request.read()
        answer = client.send(request)
        assert answer.json()["model"] == "plain"
        assert answer.json()["sha256"] == hashlib.sha256(sent).hexdigest()


def test_macros_reach_the_command_and_environment(outer: Outer, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TEST_FROM_SHELL", "shell-value")
    models = {
        "macro-model": script_model(
            cmd=f"{PY} {SCRIPT} --port ${{PORT}} ${{flags}} id=${{MODEL_ID}} env=${{env.TEST_FROM_SHELL}}",
            env=["TEST_PORT=${PORT}", "TEST_GREETING=${greeting}"],
            macros={"flags": "--mode ok", "who": "world", "greeting": "hello ${who}"},  # earlier ones only
        )
    }
    with outer(models) as url, httpx.Client(base_url=url, timeout=60) as client:
        assert client.post("/v1/audio/speech", json={"model": "macro-model", "input": "x"}).status_code == 200
        base = engine_url(client, "macro-model")
        info = httpx.get(f"{base}/info").json()
        port = base.rsplit(":", 1)[1]
        assert info["argv"][1:] == ["--port", port, "--mode", "ok", "id=macro-model", "env=shell-value"]
        assert info["env"]["TEST_PORT"] == port
        assert info["env"]["TEST_GREETING"] == "hello world"


def test_start_port_is_the_first_port_tried(outer: Outer, tmp_path: Path) -> None:
    start = free_port()
    models = {"ported": script_model()}
    registry = tmp_path / "ported.json"
    registry.write_text(json.dumps({"models": models, "startPort": start}))
    with outer(models, models_file=registry) as url, httpx.Client(base_url=url, timeout=60) as client:
        assert client.post("/v1/audio/speech", json={"model": "ported", "input": "x"}).status_code == 200
        assert engine_url(client, "ported").endswith(f":{start}")


def test_unlisted_aliases_and_names_in_the_model_list(outer: Outer) -> None:
    models = {
        "hidden": script_model(unlisted=True),
        "shown": script_model(name="Shown Voice", description="a stand-in", aliases=["tts-1"]),
    }
    with outer(models) as url, httpx.Client(base_url=url, timeout=60) as client:
        listed = {m["id"]: m for m in client.get("/v1/models").json()["data"]}
        assert set(listed) == {"shown"}
        assert listed["shown"]["name"] == "Shown Voice"
        assert client.get("/v1/models/hidden").status_code == 200
        assert client.post("/v1/audio/speech", json={"model": "hidden", "input": "x"}).status_code == 200
        assert client.post("/v1/audio/speech", json={"model": "tts-1", "input": "x"}).status_code == 200
        assert ps_row(client, "shown")["loaded"]  # type: ignore[index]


def test_server_errors_are_wrapped_and_client_errors_passed_through(outer: Outer) -> None:
    with outer({"v": script_model()}) as url, httpx.Client(base_url=url, timeout=60) as client:
        failed = client.post("/v1/audio/speech", json={"model": "v", "input": "fail please"})
        assert failed.status_code == 500
        assert failed.json()["detail"] == "model 'v': its server answered 500: boom from upstream"
        assert failed.json()["error"]["code"] == "upstream_500"
        teapot = client.post("/v1/audio/speech", json={"model": "v", "input": "teapot"})
        assert teapot.status_code == 418
        assert teapot.json() == {"error": "I am a teapot"}


def test_speech_streams_while_the_server_is_still_sending(outer: Outer) -> None:
    gate = {"chunks": 50, "chunk_bytes": 4000, "gap": 0.1}
    with outer({"v": script_model()}) as url, httpx.Client(base_url=url, timeout=60) as client:
        with client.stream("POST", "/v1/audio/speech", json={"model": "v", "input": "x", **gate}) as speech:
            chunks = speech.iter_raw()
            first = next(chunks)
            # the first bytes are here while the request is still in flight upstream: nothing buffered
            assert ps_row(client, "v")["in_flight"] == 1  # type: ignore[index]
            rest = b"".join(chunks)
        assert len(first) + len(rest) == 50 * 4000


def test_upload_cap_auth_and_queue_apply_in_front(outer: Outer) -> None:
    models = {"v": script_model(concurrencyLimit=1, max_queue=0), "ears": script_model("asr")}
    settings = {"max_upload_bytes": 10_000, "auth_token": "sesame", "max_loaded_models": 2}
    auth = {"authorization": "Bearer sesame"}
    with outer(models, **settings) as url, httpx.Client(base_url=url, timeout=60, headers=auth) as client:
        assert httpx.post(f"{url}/v1/audio/speech", json={"model": "v", "input": "x"}).status_code == 401
        big = [
            ("model", (None, "ears")),
            ("file", ("a.wav", b"0" * 100_000, "audio/wav")),
        ]  # over cap + 64 KiB
        assert client.post("/v1/audio/transcriptions", files=big).status_code == 413
        small = [("model", (None, "ears")), ("file", ("a.wav", b"0" * 2_000, "audio/wav"))]
        heard = client.post("/v1/audio/transcriptions", files=small)
        assert heard.status_code == 200
        assert heard.json()["authorization"] is None, "our bearer token never reaches the server"

        slow = {"model": "v", "input": "x", "chunks": 20, "gap": 0.1}
        results: list[int] = []
        started = threading.Event()

        def long_request() -> None:
            with client.stream("POST", "/v1/audio/speech", json=slow) as speech:
                started.set()
                results.append(speech.status_code)
                speech.read()

        worker = threading.Thread(target=long_request)
        worker.start()
        started.wait(30)
        busy = client.post("/v1/audio/speech", json={"model": "v", "input": "x"})
        worker.join(60)
        assert results == [200]
        assert busy.status_code == 429


def test_talkies_killed_leaves_no_children(tmp_path: Path) -> None:
    """SIGKILL the outer talkies itself: the watchdog stops its child (SIGTERM, then SIGKILL after the
    grace for a child that ignores SIGTERM)."""
    port = free_port()
    registry = tmp_path / "models.json"
    registry.write_text(
        json.dumps({"models": {"stubborn": script_model(mode="ignore-term", unloadTimeout=1)}})
    )
    env = {
        **os.environ,
        "TALKIES_MODELS_FILE": str(registry),
        "TALKIES_DATA_DIR": str(tmp_path / "data"),
        "TALKIES_PRELOAD": "stubborn",
        "TALKIES_DEVICE": "cpu",
    }
    server = subprocess.Popen([PY, UPSTREAM, "serve", "--port", str(port)], env=env, start_new_session=True)
    try:
        url = f"http://127.0.0.1:{port}"

        def up() -> bool:
            try:
                return httpx.get(f"{url}/api/ps", timeout=2).status_code == 200
            except httpx.HTTPError:
                return False

        wait_for(up, 120)
        child = next(r for r in httpx.get(f"{url}/api/ps").json()["models"] if r["model"] == "stubborn")[
            "pid"
        ]
        server.kill()
        server.wait()
        wait_for(lambda: pid_gone(child), 30)
    finally:
        if server.poll() is None:
            server.kill()
            server.wait()
    assert not [p for p in our_children() if p.pid == child]


def test_talkies_stopping_stops_its_children(outer: Outer) -> None:
    with outer({"v": script_model()}) as url, httpx.Client(base_url=url, timeout=60) as client:
        assert client.post("/v1/audio/speech", json={"model": "v", "input": "x"}).status_code == 200
        pid = ps_row(client, "v")["pid"]  # type: ignore[index]
    assert pid_gone(pid)
