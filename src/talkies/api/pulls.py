"""`POST /api/pull` (Ollama's pull, NDJSON progress) and `DELETE /api/models/{slug}` (remove a snapshot).

Both are admin routes: behind the bearer token like `/api/ps`. The pull's lines are Ollama's
(`{"status": ...}`, per file `{"status": "pulling <file>", "digest", "total", "completed"}`, then
`{"status": "success"}`), so Ollama clients (Open WebUI's model manager) can show them; an error is a line
`{"error": "..."}`: the last line of a stream that already started (a hub that cannot be reached, a file
of the wrong hash), or the whole body of a 404 for a model the registry does not have.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Annotated, Any, cast

from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse
from pydantic import BaseModel, Field, model_validator

from talkies.api.responses import WRITE_GUARDED, errors
from talkies.errors import EngineUnavailableError, ModelNotFoundError
from talkies.services.pulls import PullManager

router = APIRouter()

NDJSON = "application/x-ndjson"


def get_pulls(request: Request) -> PullManager:
    return cast(PullManager, request.app.state.pulls)


PullsDep = Annotated[PullManager, Depends(get_pulls)]


class PullBody(BaseModel):
    """Ollama's pull request: `model` (or its older name, `name`); `stream: false` answers once, at the
    end. `insecure` is accepted and ignored (talkies always verifies what it fetches)."""

    model: str | None = Field(None, min_length=1, max_length=256)
    name: str | None = Field(None, min_length=1, max_length=256)
    stream: bool = True
    insecure: bool = False

    @model_validator(mode="after")
    def _named(self) -> PullBody:
        if not (self.model or self.name):
            raise ValueError("give the model to pull as `model`")
        return self

    @property
    def slug(self) -> str:
        return self.model or self.name or ""


_PULL_RESPONSES: dict[int | str, dict[str, Any]] = {
    **errors(WRITE_GUARDED, 400, 422),
    200: {
        "description": "NDJSON progress lines (Ollama's shape), ending with `success` or an `error` line; "
        "with `stream: false`, the last line only, as JSON (a failure is then a 503)",
        "content": {
            NDJSON: {"schema": {"type": "string"}},
            "application/json": {"schema": {"type": "object"}},
        },
    },
    404: {
        "description": 'No such model: one NDJSON line `{"error": ...}`',
        "content": {NDJSON: {"schema": {"type": "string"}}},
    },
}


def _line(event: dict[str, Any]) -> bytes:
    return (json.dumps(event) + "\n").encode()


@router.post("/api/pull", response_class=Response, responses=_PULL_RESPONSES)
async def pull_model(body: PullBody, request: Request, pulls: PullsDep) -> Response:
    """Pull a model's snapshot into `$TALKIES_DATA_DIR/models/` (what `talkies pull` does), streaming
    progress. A pull already running for the model is joined; a client that goes away does not stop it."""
    request.state.model = body.slug
    try:
        spec = pulls.spec(body.slug)
    except ModelNotFoundError as exc:
        return Response(_line({"error": exc.message}), status_code=404, media_type=NDJSON)
    lines = pulls.follow(spec.slug)
    if not body.stream:
        last: dict[str, Any] = {}
        async for event in lines:
            last = event
        if "error" in last:
            raise EngineUnavailableError(str(last["error"]))  # not streamed: the usual 503
        return JSONResponse(last)

    async def stream() -> AsyncIterator[bytes]:
        async for event in lines:
            yield _line(event)

    return StreamingResponse(stream(), media_type=NDJSON)


class DeletedModel(BaseModel):
    model: str
    deleted: bool


@router.delete(
    "/api/models/{slug:path}",
    response_model=DeletedModel,
    responses=errors(WRITE_GUARDED, 404, 409, 422),
)
async def delete_model(slug: str, request: Request, pulls: PullsDep) -> DeletedModel:
    """Remove a model's snapshot from disk (`deleted: false` when there was none). Refused with 409 while
    the model is loaded, in use or being pulled: unload it first (`DELETE /api/ps/{slug}`)."""
    request.state.model = slug
    spec = pulls.spec(slug)
    return DeletedModel(model=spec.slug, deleted=await pulls.delete(spec.slug))
