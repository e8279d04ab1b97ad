"""Which model-server deployment serves a model, and with what resources (pure: no Ray import).

One deployment per resource class: `gpu` for executors that need CUDA, and for every model with weights
when the cluster has GPUs (TALKIES_DEVICE=cuda, or auto and Ray reports GPUs); `cpu` for the rest (the
weight-free espeak-ng and pocketsphinx always). Replicas of the `gpu` deployment ask Ray for
TALKIES_RAY_REPLICA_GPUS GPUs each, so they are placed on GPU nodes only.
"""

from __future__ import annotations

from typing import Any, Literal

from talkies.errors import ConfigError
from talkies.registry import ModelSpec, Registry
from talkies.registry.schema import EXECUTORS
from talkies.settings import Settings

ResourceClass = Literal["cpu", "gpu"]
HEAD_NODE = "node:__internal_head__"  # the resource only Ray's head node has (Ray's own libraries pin to it)
# Serve runs the replicas' code on their own event loop rather than a second one in a thread: one hop
# less per call (the app and the model servers do their blocking work in worker threads anyway).
REPLICA_ENV = {"RAY_SERVE_RUN_USER_CODE_IN_SEPARATE_THREAD": "0"}


def resource_class(spec: ModelSpec, device: str) -> ResourceClass:
    info = EXECUTORS[spec.executor]
    if info.cuda_only or (device.startswith("cuda") and info.needs_repo):
        return "gpu"
    return "cpu"


def resource_classes(registry: Registry, device: str) -> dict[ResourceClass, list[str]]:
    """The classes the registry's models need, each with its models (the `process` executor excluded:
    an external server stays with the ingress)."""
    classes: dict[ResourceClass, list[str]] = {}
    for spec in registry.models.values():
        if spec.executor != "process":
            classes.setdefault(resource_class(spec, device), []).append(spec.slug)
    return classes


def ingress_local(settings: Settings, registry: Registry) -> list[str]:
    """What runs inside the ingress replica itself rather than on model servers: the Wyoming listener
    (TALKIES_WYOMING_URI) and `process` models (external servers the ingress starts and proxies to)."""
    found = []
    if settings.wyoming_uri:
        found.append(f"the Wyoming server (TALKIES_WYOMING_URI={settings.wyoming_uri})")
    external = [slug for slug, spec in registry.models.items() if spec.executor == "process"]
    if external:
        found.append(f"process models ({', '.join(external)})")
    return found


def ingress_actor_options(settings: Settings, registry: Registry) -> dict[str, Any]:
    """`ray_actor_options` of the ingress. With ingress-local work there must be exactly one ingress
    replica (two would both bind the Wyoming address and each start its own external servers), and it is
    pinned to the head node, where Serve's HTTP proxy is, so its addresses are the head node's."""
    local = ingress_local(settings, registry)
    if not local:
        return {"num_cpus": 0, "runtime_env": {"env_vars": REPLICA_ENV}}
    if settings.ray_ingress_replicas != 1:
        raise ConfigError(
            f"TALKIES_RAY_INGRESS_REPLICAS={settings.ray_ingress_replicas}: {' and '.join(local)} run inside "
            "the ingress replica on Ray, so there must be exactly one; set TALKIES_RAY_INGRESS_REPLICAS=1, "
            "or serve them from a single-process talkies (docs/scale-out.md)"
        )
    return {"num_cpus": 0, "resources": {HEAD_NODE: 0.001}, "runtime_env": {"env_vars": REPLICA_ENV}}


def local_ray_env(settings: Settings, address: str | None) -> dict[str, str]:
    """Environment for the Ray instance `talkies serve --ray` starts itself (address None), set before
    `ray.init` so that Serve's controller, proxy and replicas all read it: Serve's proxy talks gRPC to the
    ingress replica (`RAY_SERVE_PROXY_USE_GRPC`, a hop about 1.5 ms shorter, bench/ray_overhead.py), and
    with TALKIES_RAY_DIRECT_PORT the ingress replica answers HTTP on that port itself. A cluster someone
    else started keeps its own settings: the direct port is refused there."""
    env = {"RAY_SERVE_PROXY_USE_GRPC": "1"}
    port = settings.ray_direct_port
    if not port:
        return env if address is None else {}
    if address is not None:
        raise ConfigError(
            f"TALKIES_RAY_DIRECT_PORT={port} needs the Ray instance that `talkies serve --ray` starts "
            f"itself: Ray at {address} was started with its own Serve settings; unset "
            "TALKIES_RAY_DIRECT_PORT, or drop --address / TALKIES_RAY_ADDRESS (docs/scale-out.md)"
        )
    if port == settings.port:
        raise ConfigError(
            f"TALKIES_RAY_DIRECT_PORT={port} is TALKIES_PORT, where Serve's proxy listens; pick another port"
        )
    if settings.ray_ingress_replicas != 1:
        raise ConfigError(
            f"TALKIES_RAY_DIRECT_PORT={port} serves one ingress replica; TALKIES_RAY_INGRESS_REPLICAS is "
            f"{settings.ray_ingress_replicas}: set it to 1 or unset TALKIES_RAY_DIRECT_PORT"
        )
    return {
        **env,
        "RAY_SERVE_ENABLE_DIRECT_INGRESS": "1",
        "RAY_SERVE_DIRECT_INGRESS_MIN_HTTP_PORT": str(port),
        "RAY_SERVE_DIRECT_INGRESS_MAX_HTTP_PORT": str(port + 1),  # exclusive
        "RAY_SERVE_DIRECT_INGRESS_PORT_RETRY_COUNT": "3",
        # No load balancer in front to deregister the replica first: stopping waits for the requests in
        # flight only, not Serve's default 30 s more.
        "RAY_SERVE_DIRECT_INGRESS_MIN_DRAINING_PERIOD_S": "0",
    }


def actor_options(resource: ResourceClass, settings: Settings) -> dict[str, Any]:
    """`ray_actor_options` of a model-server replica."""
    options: dict[str, Any] = {
        "num_cpus": settings.ray_replica_cpus,
        "runtime_env": {"env_vars": REPLICA_ENV},
    }
    if resource == "gpu":
        options["num_gpus"] = settings.ray_replica_gpus
    return options


def autoscaling(settings: Settings) -> dict[str, Any]:
    """Serve's `autoscaling_config` of a model-server deployment."""
    return {
        "min_replicas": settings.ray_min_replicas,
        "initial_replicas": max(1, settings.ray_min_replicas),
        "max_replicas": settings.ray_max_replicas,
        "target_ongoing_requests": settings.ray_target_ongoing_requests,
    }


def max_models(settings: Settings, models: int) -> int:
    """max_num_models_per_replica: TALKIES_RAY_MAX_MODELS_PER_REPLICA, or (0) TALKIES_MAX_LOADED_MODELS, the
    single-process server's bound; never more than the class has models. The replica's pool also keeps
    to TALKIES_MEMORY_BUDGET, evicting its least recently used idle model when a load would not fit."""
    wanted = settings.ray_max_models_per_replica or settings.max_loaded_models
    return max(1, min(wanted, models))
