"""talkies.ray.placement (pure) and the seam: the single-process server never imports Ray."""

from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from talkies.errors import ConfigError
from talkies.ray.placement import (
    HEAD_NODE,
    REPLICA_ENV,
    actor_options,
    autoscaling,
    ingress_actor_options,
    local_ray_env,
    max_models,
    resource_class,
    resource_classes,
)
from talkies.registry import load_registry
from talkies.registry.schema import EXECUTORS
from talkies.settings import load_settings
from tests.conftest import REPO_ROOT


def _registry(tmp_path: Path, models: dict[str, Any]) -> Any:
    path = tmp_path / "models.json"
    path.write_text(json.dumps({"models": models}))
    return load_registry(path, ())


MODELS = {
    "sphinx": {"executor": "pocketsphinx"},
    "espeak": {"executor": "espeak"},
    "whisper": {"executor": "whisper", "repo": "x/whisper"},
    "parakeet": {"executor": "parakeet", "repo": "x/parakeet"},
    "external": {"executor": "process", "modality": "tts", "cmd": "server --port ${PORT}"},
}


def test_weight_free_models_stay_on_cpu_and_weights_go_to_gpus_when_the_cluster_has_them(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # an executor that needs CUDA goes to the GPU deployment even when TALKIES_DEVICE says cpu
    monkeypatch.setitem(EXECUTORS, "parakeet", replace(EXECUTORS["parakeet"], cuda_only=True))
    registry = _registry(tmp_path, MODELS)
    on_cpu = {slug: resource_class(spec, "cpu") for slug, spec in registry.models.items()}
    on_cuda = {slug: resource_class(spec, "cuda") for slug, spec in registry.models.items()}
    assert on_cpu == {
        "sphinx": "cpu",
        "espeak": "cpu",
        "whisper": "cpu",
        "parakeet": "gpu",
        "external": "cpu",
    }
    assert on_cuda == {
        "sphinx": "cpu",
        "espeak": "cpu",
        "whisper": "gpu",
        "parakeet": "gpu",
        "external": "cpu",
    }
    # an external server (process executor) stays with the ingress: no model-server deployment for it
    assert resource_classes(registry, "cuda") == {"cpu": ["sphinx", "espeak"], "gpu": ["whisper", "parakeet"]}


def test_actor_options_and_autoscaling_come_from_the_settings() -> None:
    settings = load_settings(
        ray_replica_cpus=0.5,
        ray_replica_gpus=0.25,
        ray_min_replicas=0,
        ray_max_replicas=4,
        ray_target_ongoing_requests=3,
    )
    env = {"env_vars": {"RAY_SERVE_RUN_USER_CODE_IN_SEPARATE_THREAD": "0"}}
    assert actor_options("cpu", settings) == {"num_cpus": 0.5, "runtime_env": env}
    assert actor_options("gpu", settings) == {"num_cpus": 0.5, "num_gpus": 0.25, "runtime_env": env}
    assert autoscaling(settings) == {
        "min_replicas": 0,
        "initial_replicas": 1,
        "max_replicas": 4,
        "target_ongoing_requests": 3.0,
    }


@pytest.mark.parametrize(
    ("setting", "loaded", "models", "expected"),
    [(0, 8, 3, 3), (0, 2, 5, 2), (1, 8, 5, 1), (4, 1, 2, 2)],
)
def test_models_per_replica(setting: int, loaded: int, models: int, expected: int) -> None:
    settings = load_settings(ray_max_models_per_replica=setting, max_loaded_models=loaded)
    assert max_models(settings, models) == expected


def test_the_single_process_server_never_imports_ray(tmp_path: Path) -> None:
    """Building, starting and serving a request on the app imports nothing of Ray (the seam is a Protocol)."""
    code = f"""
import sys, asyncio, httpx
from talkies.settings import load_settings
from talkies.api.app import create_app
settings = load_settings(models_file={str(REPO_ROOT / "models-cpu.json")!r}, data_dir={str(tmp_path)!r})
app = create_app(settings)
async def main():
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://localhost") as client:
            assert (await client.get("/api/ps")).status_code == 200
            assert (await client.get("/readyz")).status_code == 200
asyncio.run(main())
print(",".join(sorted(m for m in sys.modules if m == "ray" or m.startswith(("ray.", "talkies.ray")))))
"""
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, cwd=REPO_ROOT
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == ""


def test_wyoming_and_process_models_need_one_ingress_replica_on_the_head_node(tmp_path: Path) -> None:
    built_in = _registry(tmp_path, {"sphinx": MODELS["sphinx"]})
    with_external = _registry(tmp_path, {"sphinx": MODELS["sphinx"], "external": MODELS["external"]})
    plain = load_settings(ray_ingress_replicas=3)
    env = {"env_vars": REPLICA_ENV}
    assert ingress_actor_options(plain, built_in) == {
        "num_cpus": 0,
        "runtime_env": env,
    }  # anywhere, any number
    pinned = {"num_cpus": 0, "resources": {HEAD_NODE: 0.001}, "runtime_env": env}
    wyoming = load_settings(wyoming_uri="tcp://0.0.0.0:10300")
    assert ingress_actor_options(wyoming, built_in) == pinned
    assert ingress_actor_options(load_settings(), with_external) == pinned
    with pytest.raises(
        ConfigError, match=r"TALKIES_RAY_INGRESS_REPLICAS=2: the Wyoming server .*exactly one"
    ):
        ingress_actor_options(
            load_settings(wyoming_uri="tcp://0.0.0.0:10300", ray_ingress_replicas=2), built_in
        )
    with pytest.raises(ConfigError, match=r"process models \(external\)"):
        ingress_actor_options(plain, with_external)


def test_the_ray_instance_talkies_starts_gets_the_grpc_proxy_and_the_direct_port() -> None:
    assert local_ray_env(load_settings(), None) == {"RAY_SERVE_PROXY_USE_GRPC": "1"}
    assert local_ray_env(load_settings(), "10.0.0.5:6379") == {}  # a cluster someone else started
    direct = local_ray_env(load_settings(ray_direct_port=8001), None)
    assert direct["RAY_SERVE_ENABLE_DIRECT_INGRESS"] == "1"
    assert direct["RAY_SERVE_DIRECT_INGRESS_MIN_HTTP_PORT"] == "8001"
    assert direct["RAY_SERVE_DIRECT_INGRESS_MAX_HTTP_PORT"] == "8002"  # exclusive: the one port
    assert direct["RAY_SERVE_PROXY_USE_GRPC"] == "1"


@pytest.mark.parametrize(
    ("overrides", "address", "message"),
    [
        (
            {"ray_direct_port": 8001},
            "10.0.0.5:6379",
            r"DIRECT_PORT=8001 needs the Ray instance .* 10\.0\.0\.5",
        ),
        ({"ray_direct_port": 8000, "port": 8000}, None, r"DIRECT_PORT=8000 is TALKIES_PORT"),
        ({"ray_direct_port": 8001, "ray_ingress_replicas": 2}, None, r"INGRESS_REPLICAS is 2"),
    ],
)
def test_a_direct_port_it_cannot_serve_is_refused(
    overrides: dict[str, Any], address: str | None, message: str
) -> None:
    with pytest.raises(ConfigError, match=message):
        local_ray_env(load_settings(**overrides), address)
