"""The Serve application: an ingress deployment and one model-server deployment per resource class.

`build_app(settings)` returns the `Application` (`serve.run(build_app(settings), route_prefix="/")`);
`talkies.ray:app` builds it from the TALKIES_* environment (`serve run talkies.ray:app`, or the
`import_path` of a Serve config file); `serve_forever` is `talkies serve --ray`.
"""

from __future__ import annotations

import logging
import os
import signal
import threading
from typing import Any, cast

from ray.serve import Application
from ray.serve.deployment import Deployment

import ray
from ray import serve
from talkies.device import resolve_device
from talkies.errors import ConfigError
from talkies.ray.ingress import Ingress
from talkies.ray.model_server import EngineFactory, ModelServer
from talkies.ray.placement import (
    actor_options,
    autoscaling,
    ingress_actor_options,
    local_ray_env,
    max_models,
    resource_classes,
)
from talkies.registry import default_models_file
from talkies.settings import Settings

log = logging.getLogger("talkies.ray")
APP_NAME = "talkies"
INGRESS_MAX_ONGOING = 1000  # the ingress only parses and forwards: the model servers bound the work


def cluster_device(settings: Settings) -> str:
    """TALKIES_DEVICE for the whole application: `auto` is cuda when the Ray cluster has GPUs."""
    if settings.device != "auto":
        return settings.device
    if ray.is_initialized():
        gpus = ray.cluster_resources().get("GPU", 0)  # type: ignore[no-untyped-call]
        return "cuda" if gpus > 0 else "cpu"
    return resolve_device("auto")


def build_app(settings: Settings, *, engine_factory: EngineFactory | None = None) -> Application:
    """The Serve application for `settings`. `engine_factory` replaces the model servers' engine factory
    (tests bound a generated model's decoding with it)."""
    from talkies.api.app import build_registry

    if settings.ray_min_replicas > settings.ray_max_replicas:
        raise ConfigError(
            f"TALKIES_RAY_MIN_REPLICAS ({settings.ray_min_replicas}) is above TALKIES_RAY_MAX_REPLICAS "
            f"({settings.ray_max_replicas})"
        )
    device = cluster_device(settings)
    # Every replica reads the same registry file, whatever its own node's device would pick.
    models_file = settings.models_file or default_models_file(device)
    settings = settings.model_copy(update={"models_file": models_file})
    registry = build_registry(settings, device)
    servers: dict[str, Any] = {}
    for resource, slugs in resource_classes(registry, device).items():
        deployment = cast(Deployment, serve.deployment(ModelServer)).options(
            name=f"talkies-models-{resource}",
            ray_actor_options=actor_options(resource, settings),
            autoscaling_config=autoscaling(settings),
            max_ongoing_requests=settings.ray_max_ongoing_requests,
        )
        server_device = device if resource == "gpu" else "cpu"
        servers[resource] = deployment.bind(
            settings, server_device, max_models(settings, len(slugs)), engine_factory
        )
        log.info("model-server deployment %s: %s", f"talkies-models-{resource}", ", ".join(slugs))
    ingress = cast(Deployment, serve.deployment(Ingress)).options(
        name="talkies-ingress",
        num_replicas=settings.ray_ingress_replicas,
        ray_actor_options=ingress_actor_options(settings, registry),
        max_ongoing_requests=INGRESS_MAX_ONGOING,
    )
    return ingress.bind(settings, device, servers)


def serve_forever(settings: Settings, address: str | None) -> int:
    """`talkies serve --ray`: connect (or start Ray here), run the application with Serve's HTTP proxy on
    TALKIES_HOST:TALKIES_PORT, and stop it on SIGINT / SIGTERM."""
    target = address or settings.ray_address or os.environ.get("RAY_ADDRESS") or None  # Ray's own variable
    env = local_ray_env(settings, target)
    os.environ.update({k: v for k, v in env.items() if k not in os.environ})  # the operator's own win
    # Without an address, a Ray instance of this process's own ("local": not one found running here).
    ray.init(address=target or "local", include_dashboard=False, configure_logging=False)
    stop = threading.Event()  # after ray.init, which installs its own SIGTERM handler (exit at once)
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: stop.set())
    serve.start(http_options={"host": settings.host, "port": settings.port})
    serve.run(build_app(settings), name=APP_NAME, route_prefix="/")
    where = target or "local"
    log.info("talkies on Ray Serve: http://%s:%d/ (Ray at %s)", settings.host, settings.port, where)
    if settings.ray_direct_port:
        log.info(
            "direct ingress (experimental): http://%s:%d/ answers without Serve's proxy",
            settings.host,
            settings.ray_direct_port,
        )
    stop.wait()
    log.info("stopping the talkies application")
    serve.delete(APP_NAME)
    if target is None:
        serve.shutdown()  # type: ignore[no-untyped-call]
        ray.shutdown()
    return 0
