"""Liveness, the model list, and the Ollama-style resource endpoints."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request

from talkies.api.deps import PoolDep, RegistryDep
from talkies.engines.base import Modality
from talkies.pool import ModelPool
from talkies.registry import ModelSpec

router = APIRouter()


def _model_card(spec: ModelSpec, pool: ModelPool) -> dict[str, Any]:
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
        "loaded": pool.is_loaded(spec.slug),
        "available": reason is None,
        "unavailable_reason": reason,
    }


@router.get("/healthz")
async def healthz(request: Request, registry: RegistryDep, pool: PoolDep) -> dict[str, Any]:
    return {
        "ok": True,
        "device": pool.device,
        "models": list(registry.models),
        "failed": pool.failed_loads(),
    }


@router.get("/v1/models")
async def list_models(registry: RegistryDep, pool: PoolDep) -> dict[str, Any]:
    return {"object": "list", "data": [_model_card(spec, pool) for spec in registry.models.values()]}


@router.get("/v1/models/{model_id:path}")
async def get_model(model_id: str, pool: PoolDep) -> dict[str, Any]:
    return _model_card(pool.spec(model_id), pool)


@router.get("/api/ps")
async def ps(pool: PoolDep) -> dict[str, Any]:
    return {"models": pool.ps()}


@router.delete("/api/ps/{model_id:path}")
async def unload_model(model_id: str, request: Request, pool: PoolDep) -> dict[str, Any]:
    request.state.model = model_id
    await pool.unload(model_id)
    return {"unloaded": model_id}


@router.post("/unload")
async def unload_all(pool: PoolDep) -> dict[str, Any]:
    return {"unloaded": await pool.unload_all()}
