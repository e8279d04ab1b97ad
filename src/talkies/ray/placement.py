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
        return {"num_cpus": 0}
    if settings.ray_ingress_replicas != 1:
        raise ConfigError(
            f"TALKIES_RAY_INGRESS_REPLICAS={settings.ray_ingress_replicas}: {' and '.join(local)} run inside "
            "the ingress replica on Ray, so there must be exactly one; set TALKIES_RAY_INGRESS_REPLICAS=1, "
            "or serve them from a single-process talkies (docs/scale-out.md)"
        )
    return {"num_cpus": 0, "resources": {HEAD_NODE: 0.001}}


def actor_options(resource: ResourceClass, settings: Settings) -> dict[str, Any]:
    """`ray_actor_options` of a model-server replica."""
    options: dict[str, Any] = {"num_cpus": settings.ray_replica_cpus}
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
