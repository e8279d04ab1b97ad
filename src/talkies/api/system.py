"""Liveness, readiness, metrics, the model list, and the Ollama-style resource endpoints."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request, Response
from fastapi.responses import JSONResponse

from talkies.api.deps import PoolDep, RegistryDep
from talkies.api.lifecycle import RETRY_AFTER, Lifecycle
from talkies.api.pulls import PullsDep
from talkies.api.responses import (
    GUARDED,
    RUNS_MODEL,
    WRITE_GUARDED,
    ModelCard,
    ModelList,
    body,
    errors,
    media,
    not_ready,
)
from talkies.engines.base import Modality
from talkies.errors import CapabilityError, ServiceUnavailableError
from talkies.pool import ModelPool
from talkies.registry import ModelSpec
from talkies.services.provider import RemoteModels
from talkies.services.pulls import PullManager

router = APIRouter()


async def held_remotely(remote: RemoteModels | None) -> frozenset[str]:
    """On Ray Serve, the models some model-server replica holds now (the ingress's own pool holds none of
    them); empty on the single-process server."""
    return frozenset(row["model"] for row in await remote.ps()) if remote is not None else frozenset()


def model_card(
    spec: ModelSpec, pool: ModelPool, pulls: PullManager, held: frozenset[str] = frozenset()
) -> dict[str, Any]:
    """One model as `/v1/models` lists it; `held`: the slugs loaded on Ray Serve's model servers."""
    reason = pool.unavailable_reason(spec.slug)
    modality: Modality = spec.kind
    return {
        "id": spec.slug,
        "object": "model",
        "created": 0,
        "owned_by": spec.repo.split("/")[0] if spec.repo else "talkies",
        "modality": modality,
        "executor": spec.executor,
        "repo": spec.repo,
        "languages": list(spec.languages),
        "aliases": pool.registry.aliases_of(spec.slug),
        "default": pool.registry.default_slug(spec.kind) == spec.slug,
        "name": spec.name,
        "description": spec.description,
        "loaded": pool.is_loaded(spec.slug) or spec.slug in held,
        "available": reason is None,
        "unavailable_reason": reason,
        "load_error": pool.failed_loads().get(spec.slug),
        "installed": pulls.installed(spec),
        "download_bytes": pulls.download_bytes(spec),
        "pull": pulls.progress(spec.slug),
    }


@router.get("/healthz")
async def healthz(request: Request, registry: RegistryDep, pool: PoolDep) -> dict[str, Any]:
    """Liveness, open to anyone who reaches the port: failed models by name only. Why they failed (a
    child server's own output may carry secrets) is behind auth: /api/ps and /v1/models/{id}."""
    return {
        "ok": True,
        "device": pool.device,
        "models": list(registry.models),
        "failed": sorted(pool.failed_loads()),
    }


_NOT_READY = {
    "starting": "the server is starting (preloading models)",
    "draining": "the server is shutting down: requests in flight finish, new ones answer 503",
}


@router.get("/readyz", response_model=None, responses=not_ready())
async def readyz(request: Request) -> dict[str, Any] | JSONResponse:
    """Readiness: 200 once started (preloads done) and not draining; 503 naming why otherwise. Liveness is
    /healthz, which stays 200 while the server drains."""
    lifecycle: Lifecycle = request.app.state.lifecycle
    reason = lifecycle.not_ready_reason()
    remote: RemoteModels | None = request.app.state.remote
    detail = _NOT_READY.get(reason or "")
    if reason is None and remote is not None:  # on Ray Serve: the model-server deployments too
        detail = await remote.not_ready_reason()
        reason = "model_servers" if detail else None
    if reason is None:
        return {"ready": True}
    body = {
        "ready": False,
        "reason": reason,
        "detail": detail,
        "in_flight": lifecycle.in_flight,
    }
    return JSONResponse(body, status_code=503, headers={"Retry-After": str(RETRY_AFTER)})


@router.get(
    "/metrics",
    response_class=Response,
    responses={**media(["text/plain"], "Prometheus text format", binary=False), **errors(401, 421, 503)},
)
async def metrics(request: Request) -> Response:
    """Prometheus text format. Behind the bearer token unless TALKIES_METRICS_PUBLIC=true."""
    collected = request.app.state.metrics
    if collected is None:
        raise ServiceUnavailableError("GET /metrics needs prometheus-client: pip install prometheus-client")
    remote: RemoteModels | None = request.app.state.remote
    if remote is not None:  # on Ray Serve: the model-server replicas' pool metrics too, labelled by replica
        from talkies.metrics_remote import render_merged

        families = await remote.metric_families()
        text = render_merged(collected.registry, remote.metric_labels, families)
        return Response(text, media_type=collected.content_type)
    return Response(collected.render(), media_type=collected.content_type)


@router.get("/v1/models", response_model=None, responses={**body(ModelList), **errors(GUARDED)})
async def list_models(
    request: Request, registry: RegistryDep, pool: PoolDep, pulls: PullsDep
) -> dict[str, Any]:
    listed = [spec for spec in registry.models.values() if not spec.unlisted]
    pulls.list_sizes_soon()
    held = await held_remotely(request.app.state.remote)
    return {"object": "list", "data": [model_card(spec, pool, pulls, held) for spec in listed]}


@router.get(
    "/v1/models/{model_id:path}",
    response_model=None,
    responses={**body(ModelCard), **errors(GUARDED, 404, 422)},
)
async def get_model(model_id: str, request: Request, pool: PoolDep, pulls: PullsDep) -> dict[str, Any]:
    spec = pool.spec(model_id)
    pulls.list_sizes_soon()
    return model_card(spec, pool, pulls, await held_remotely(request.app.state.remote))


@router.get("/api/ps", responses=errors(GUARDED))
async def ps(request: Request, pool: PoolDep, pulls: PullsDep) -> dict[str, Any]:
    pulling = {slug: pull.progress() for slug, pull in pulls.in_flight().items()}
    remote: RemoteModels | None = request.app.state.remote
    if remote is None:
        memory = pool.memory_summary()
        rows = pool.ps()
    else:  # on Ray Serve: what each model-server replica holds (rows name the replica); budgets per replica
        rows = await remote.ps()
        memory = {"budget_bytes": None, "used_bytes": sum(row.get("memory_bytes") or 0 for row in rows)}
    return {"models": rows, "memory": memory, "failed": pool.failed_loads(), "pulls": pulling}


@router.post("/api/ps/{model_id:path}", responses=errors(WRITE_GUARDED, RUNS_MODEL, 422))
async def load_model(model_id: str, request: Request, pool: PoolDep) -> dict[str, Any]:
    """Load one model now (as a request would, queue limits included) so the first request is fast."""
    request.state.model = model_id
    remote: RemoteModels | None = request.app.state.remote
    await (remote or pool).preload((model_id,))
    return {"loaded": model_id}


@router.delete("/api/ps/{model_id:path}", responses=errors(WRITE_GUARDED, 404, 422))
async def unload_model(model_id: str, request: Request, pool: PoolDep) -> dict[str, Any]:
    request.state.model = model_id
    _refuse_on_ray(request)
    await pool.unload(model_id)
    return {"unloaded": model_id}


@router.post("/unload", responses=errors(WRITE_GUARDED))
async def unload_all(request: Request, pool: PoolDep) -> dict[str, Any]:
    _refuse_on_ray(request)
    return {"unloaded": await pool.unload_all()}


def _refuse_on_ray(request: Request) -> None:
    if request.app.state.remote is not None:
        raise CapabilityError(
            "on Ray Serve each model-server replica unloads its least recently used model itself "
            "(TALKIES_RAY_MAX_MODELS_PER_REPLICA); DELETE /api/ps and POST /unload are not available"
        )
