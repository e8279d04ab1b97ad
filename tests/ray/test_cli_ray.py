"""`talkies serve --ray --address ADDR` deploys the application on a running cluster and removes it on
SIGTERM; `talkies.ray:app` (what `serve run` and a Serve config file import) is the same application."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from talkies.settings import load_settings
from tests.conftest import REPO_ROOT
from tests.live_server import free_port
from tests.ray.conftest import PATIENT, RayServe, wait_ready

pytestmark = [pytest.mark.ray, pytest.mark.slow]


def _registry(tmp_path: Path) -> Path:
    path = tmp_path / "models.json"
    path.write_text(json.dumps({"models": {"cli-voice": {"executor": "espeak", "default_voice": "en-us"}}}))
    return path


def _models(url: str) -> list[str]:
    """The models the application on the proxy lists; none while (re)deploying or when there is none."""
    try:
        response = httpx.get(f"{url}/v1/models", timeout=30)
    except httpx.TransportError:  # a replica still starting up
        return []
    return [m["id"] for m in response.json()["data"]] if response.status_code == 200 else []


def test_talkies_serve_ray_deploys_on_the_cluster_and_removes_itself_on_sigterm(
    ray_serve: RayServe, tmp_path: Path
) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("TALKIES_")}
    env.update(
        PYTHONPATH=os.pathsep.join([str(REPO_ROOT / "src"), str(REPO_ROOT)]),
        TALKIES_MODELS_FILE=str(_registry(tmp_path)),
        TALKIES_DATA_DIR=str(tmp_path / "data"),
        TALKIES_ENGINE_ISOLATION="inprocess",
        TALKIES_DEVICE="cpu",
        TALKIES_RAY_REPLICA_CPUS="0.25",
    )
    log = (tmp_path / "serve.log").open("wb")
    process = subprocess.Popen(
        [sys.executable, "-m", "talkies", "serve", "--ray", "--address", ray_serve.address],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        deadline = time.monotonic() + 240
        while "cli-voice" not in _models(ray_serve.url):
            assert process.poll() is None, (tmp_path / "serve.log").read_text()
            assert time.monotonic() < deadline, "talkies serve --ray did not deploy within 240 s"
            time.sleep(0.5)
        wait_ready(ray_serve.url)
        speech = httpx.post(
            f"{ray_serve.url}/v1/audio/speech",
            json={"model": "cli-voice", "input": "deployed by the command line", "response_format": "wav"},
            timeout=120,
        )
        assert speech.status_code == 200
        assert speech.content[:4] == b"RIFF"
        process.send_signal(signal.SIGTERM)
        assert process.wait(120) == 0
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
        log.close()
    assert _models(ray_serve.url) == []  # the application is gone from the cluster


def test_talkies_ray_app_is_built_from_the_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from ray.serve import Application

    import talkies.ray

    monkeypatch.setenv("TALKIES_MODELS_FILE", str(_registry(tmp_path)))
    monkeypatch.setenv("TALKIES_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("TALKIES_RAY_MAX_REPLICAS", "3")
    application = talkies.ray.app
    assert isinstance(application, Application)
    ingress = application._bound_deployment  # what Serve deploys (private attributes: a test only)
    server = ingress.init_args[2]["cpu"]._bound_deployment
    assert (ingress.name, server.name) == ("talkies-ingress", "talkies-models-cpu")
    assert server._deployment_config.autoscaling_config.max_replicas == 3
    assert server.ray_actor_options["num_cpus"] == load_settings().ray_replica_cpus
    with pytest.raises(AttributeError):
        _ = talkies.ray.nothing_here  # type: ignore[attr-defined]


def test_talkies_serve_ray_with_a_direct_port_answers_on_it_and_on_the_proxy(tmp_path: Path) -> None:
    """Without an address, `talkies serve --ray` starts a Ray instance of its own; TALKIES_RAY_DIRECT_PORT
    makes the ingress replica answer HTTP itself there (Serve's direct ingress), beside Serve's proxy on
    TALKIES_PORT. The same app answers on both: the speech and the error body are the same."""
    proxy_port, direct_port = free_port(), free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("TALKIES_", "RAY_"))}
    env.update(
        PYTHONPATH=os.pathsep.join([str(REPO_ROOT / "src"), str(REPO_ROOT)]),
        RAY_USAGE_STATS_ENABLED="0",
        **PATIENT,
        TALKIES_MODELS_FILE=str(_registry(tmp_path)),
        TALKIES_DATA_DIR=str(tmp_path / "data"),
        TALKIES_ENGINE_ISOLATION="inprocess",
        TALKIES_DEVICE="cpu",
        TALKIES_HOST="127.0.0.1",
        TALKIES_PORT=str(proxy_port),
        TALKIES_RAY_DIRECT_PORT=str(direct_port),
        TALKIES_RAY_REPLICA_CPUS="0.25",
    )
    log_path = tmp_path / "serve.log"
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "talkies", "serve", "--ray"], env=env, stdout=log, stderr=subprocess.STDOUT
        )
        try:
            direct, proxy = f"http://127.0.0.1:{direct_port}", f"http://127.0.0.1:{proxy_port}"
            deadline = time.monotonic() + 300
            while "cli-voice" not in _models(direct) or "cli-voice" not in _models(proxy):
                assert process.poll() is None, log_path.read_text()
                assert time.monotonic() < deadline, f"not serving within 300 s: {log_path.read_text()}"
                time.sleep(0.5)
            body = {"model": "cli-voice", "input": "straight to the ingress", "response_format": "pcm"}
            speeches = [
                httpx.post(f"{url}/v1/audio/speech", json=body, timeout=120) for url in (direct, proxy)
            ]
            assert [s.status_code for s in speeches] == [200, 200]
            assert len(speeches[0].content) > 4800  # 0.1 s of 24 kHz 16-bit audio at least
            assert speeches[0].content == speeches[1].content  # espeak-ng is deterministic
            bad = {"model": "cli-voice", "input": "x", "response_format": "ogg-vorbis"}
            errors = [httpx.post(f"{url}/v1/audio/speech", json=bad, timeout=60) for url in (direct, proxy)]
            assert [e.status_code for e in errors] == [400, 400]
            assert errors[0].json() == errors[1].json()
            process.send_signal(signal.SIGTERM)
            assert process.wait(120) == 0, log_path.read_text()
        finally:
            if process.poll() is None:
                process.kill()
                process.wait()
    assert "direct ingress (experimental)" in log_path.read_text()
