"""One local two-node Ray cluster for the session (`ray.cluster_utils.Cluster`: a head and a worker node,
one CPU each, no dashboard), with Serve's HTTP proxy on 127.0.0.1 only. Each module deploys its own
talkies application on it (`deploy`) and deletes it at the end. Skipped without the `talkies[ray]` extra."""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest

from tests.conftest import REPO_ROOT
from tests.live_server import free_port

APP = "talkies"


@dataclass(frozen=True)
class RayServe:
    url: str  # Serve's HTTP proxy, http://127.0.0.1:PORT
    address: str  # the Ray cluster's, for `talkies serve --ray --address`


# Serve's controller kills a proxy that is not ready within 5 s (three tries, then serve.start fails) or
# misses three 10 s health checks: on a 2-core machine under load, a proxy process takes longer than that
# to import Ray. The tests' Ray instances wait longer (Serve's own settings, read when Ray starts).
PATIENT = {"RAY_SERVE_PROXY_READY_CHECK_TIMEOUT_S": "60", "RAY_SERVE_PROXY_HEALTH_CHECK_TIMEOUT_S": "60"}


@pytest.fixture(scope="session")
def ray_serve() -> Iterator[RayServe]:
    pytest.importorskip("ray.serve", reason="the talkies[ray] extra is not installed")
    from ray.cluster_utils import Cluster

    import ray
    from ray import serve

    # Ray's worker processes import talkies (and tests.ray.engines) from this checkout.
    saved = {
        k: os.environ.get(k) for k in ("PYTHONPATH", "RAY_USAGE_STATS_ENABLED", "HF_HUB_OFFLINE", *PATIENT)
    }
    paths = [str(REPO_ROOT / "src"), str(REPO_ROOT), os.environ.get("PYTHONPATH", "")]
    os.environ["PYTHONPATH"] = os.pathsep.join(p for p in paths if p)
    os.environ["RAY_USAGE_STATS_ENABLED"] = "0"
    os.environ.update(PATIENT)
    os.environ["HF_HUB_OFFLINE"] = "1"  # replicas never reach the hub (the test env's rule, set per test)
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1, "include_dashboard": False})
    try:
        cluster.add_node(num_cpus=1)
        ray.init(address=cluster.address, logging_level="warning", log_to_driver=False)
        port = free_port()
        serve.start(http_options={"host": "127.0.0.1", "port": port, "location": "HeadOnly"})
        yield RayServe(url=f"http://127.0.0.1:{port}", address=cluster.address)
    finally:
        with contextlib.suppress(Exception):
            serve.shutdown()
        ray.shutdown()
        cluster.shutdown()
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


@contextlib.contextmanager
def deploy(ray_serve: RayServe, settings: Any, **kwargs: Any) -> Iterator[str]:
    """Run the talkies application for `settings` (kwargs go to `build_app`) until the block ends."""
    from ray import serve
    from talkies.ray.app import build_app

    serve.run(build_app(settings, **kwargs), name=APP, route_prefix="/")
    try:
        wait_ready(ray_serve.url)
        yield ray_serve.url
    finally:
        serve.delete(APP)


def wait_ready(url: str, timeout: float = 180.0) -> None:
    deadline = time.monotonic() + timeout
    while True:
        with contextlib.suppress(httpx.TransportError):
            if httpx.get(f"{url}/readyz", timeout=10).status_code == 200:
                return
        if time.monotonic() > deadline:
            raise RuntimeError(f"the talkies application on Ray did not become ready within {timeout:g}s")
        time.sleep(0.2)


def replica_states(deployment: str = "talkies-models-cpu") -> list[dict[str, Any]]:
    """Every model-server replica's `state()` (a broadcast through Serve's handle)."""
    from ray import serve

    handle = serve.get_deployment_handle(deployment, app_name=APP)
    return [
        s
        for s in handle.broadcast("state").results(timeout_s=60, return_exceptions=True)
        if isinstance(s, dict)
    ]


def in_flight(model: str) -> int:
    """Requests for `model` running in the model-server replicas now, as their pools report."""
    return sum(r["in_flight"] for s in replica_states() for r in s["models"] if r["model"] == model)


def wait_for(condition: Any, what: str, timeout: float = 240.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.2)
