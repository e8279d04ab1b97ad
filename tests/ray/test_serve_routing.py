"""Model-affine routing on Ray Serve: two model-server replicas holding one model each
(`max_num_models_per_replica=1`). Requests for a model go to the replica that holds it (the replica ids
Ray reports); alternating two models reloads nothing once each replica holds one; and a replica killed
with requests in flight fails those cleanly (or they complete) while later requests succeed on a new one.
"""

from __future__ import annotations

import concurrent.futures
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest

from talkies.settings import Settings, load_settings
from tests.api.audio_helpers import SENTENCE_A, silence, speak, write_wav
from tests.ray.conftest import APP, RayServe, deploy, in_flight, replica_states, wait_for

pytestmark = [pytest.mark.ray, pytest.mark.slow]

A, B = "sphinx-a", "sphinx-b"
WARM_UP_ROUNDS = 40  # bound on rounds until each replica holds one model (each round settles it w.p. >= 1/2)


@pytest.fixture(scope="module")
def settings(tmp_path_factory: pytest.TempPathFactory) -> Settings:
    tmp = tmp_path_factory.mktemp("ray-routing")
    models = {A: {"executor": "pocketsphinx"}, B: {"executor": "pocketsphinx"}}
    (tmp / "models.json").write_text(json.dumps({"models": models}))
    return load_settings(
        models_file=tmp / "models.json",
        data_dir=tmp / "data",
        device="cpu",
        engine_isolation="inprocess",
        sweeper_interval=0,
        ray_replica_cpus=0.25,
        ray_min_replicas=2,
        ray_max_replicas=2,
        ray_max_models_per_replica=1,
    )


@pytest.fixture(scope="module")
def url(ray_serve: RayServe, settings: Settings) -> Iterator[str]:
    with deploy(ray_serve, settings) as base:
        yield base


@pytest.fixture(scope="module")
def clip(tmp_path_factory: pytest.TempPathFactory) -> bytes:
    path = write_wav(tmp_path_factory.mktemp("ray-routing-clip") / "a.wav", [speak(SENTENCE_A)])
    return path.read_bytes()


def transcribe(url: str, model: str, clip: bytes) -> httpx.Response:
    return httpx.post(
        f"{url}/v1/audio/transcriptions",
        data={"model": model},
        files={"file": ("a.wav", clip, "audio/wav")},
        timeout=300,
    )


def holders() -> dict[str, set[str]]:
    """model -> the replicas holding it, as the replicas report."""
    held: dict[str, set[str]] = {}
    for state in replica_states():
        for row in state["models"]:
            held.setdefault(row["model"], set()).add(state["replica"])
    return held


def total_loads() -> int:
    return sum(sum(state["loads"].values()) for state in replica_states())


def settle(url: str, clip: bytes) -> None:
    """Alternate A and B until a whole round loads nothing and each replica holds one of them."""
    for _ in range(WARM_UP_ROUNDS):
        before = total_loads()
        for model in (A, B):
            assert transcribe(url, model, clip).status_code == 200
        held = holders()
        if (
            total_loads() == before
            and len(held.get(A, ())) == len(held.get(B, ())) == 1
            and held[A] != held[B]
        ):
            return
    raise AssertionError(f"replicas never settled on one model each: {holders()}")


def routed_replica(model: str) -> str:
    """The replica Ray's router picks for a call with multiplexed_model_id=model."""
    from ray import serve

    handle = serve.get_deployment_handle("talkies-models-cpu", app_name=APP)
    state: dict[str, Any] = handle.options(multiplexed_model_id=model).state.remote().result(timeout_s=60)
    return str(state["replica"])


def test_alternating_models_reload_nothing_once_each_replica_holds_one(url: str, clip: bytes) -> None:
    settle(url, clip)
    before = {s["replica"]: dict(s["loads"]) for s in replica_states()}
    for _ in range(5):
        for model in (A, B):
            response = transcribe(url, model, clip)
            assert response.status_code == 200
            assert "weather" in response.json()["text"]
    after = {s["replica"]: dict(s["loads"]) for s in replica_states()}
    assert after == before


def test_requests_go_to_the_replica_that_holds_their_model(url: str, clip: bytes) -> None:
    settle(url, clip)
    held = holders()
    (replica_a,), (replica_b,) = held[A], held[B]
    assert replica_a != replica_b
    for _ in range(4):
        assert routed_replica(A) == replica_a
        assert routed_replica(B) == replica_b
    rows = httpx.get(f"{url}/api/ps", timeout=60).json()["models"]
    assert {(r["model"], r["replica"]) for r in rows} == {(A, replica_a), (B, replica_b)}


def test_a_replica_killed_under_requests_fails_them_cleanly_and_a_new_one_serves(
    url: str, clip: bytes, tmp_path: Path
) -> None:
    import ray
    from ray import serve

    sentence = speak(SENTENCE_A)
    long_clip = write_wav(tmp_path / "long.wav", [np.concatenate([sentence, silence(0.5)] * 8)]).read_bytes()
    settle(url, clip)
    victim = next(s for s in replica_states() if any(r["model"] == A for r in s["models"]))
    with concurrent.futures.ThreadPoolExecutor(4) as pool:
        futures = [pool.submit(transcribe, url, A, long_clip) for _ in range(4)]
        wait_for(lambda: in_flight(A) > 0 or all(f.done() for f in futures), "a request in flight")
        ray.kill(ray.get_actor(victim["actor"], namespace="serve"), no_restart=True)
        answers = [f.result() for f in futures]
    for answer in answers:
        if answer.status_code == 200:
            assert "weather" in answer.json()["text"]
        else:
            assert answer.status_code in (500, 503), answer.text
            assert answer.json()["error"]["message"]

    def replaced() -> bool:
        app = serve.status().applications[APP]
        deployment = app.deployments["talkies-models-cpu"]
        running = deployment.replica_states.get("RUNNING", 0)
        return bool(deployment.status == "HEALTHY" and running == 2)

    def seen_by_handles() -> bool:  # this process's handle learns of the new replica a moment later
        live = {s["replica"] for s in replica_states()}
        return len(live) == 2 and victim["replica"] not in live

    wait_for(replaced, "Serve to replace the killed replica")
    wait_for(seen_by_handles, "the new replica to answer broadcasts")
    response = transcribe(url, A, clip)
    assert response.status_code == 200
    assert "weather" in response.json()["text"]
    assert holders()[A]
    assert victim["replica"] not in holders()[A]
