"""What the routes answer besides their success body, for the OpenAPI schema (`responses=` on each route).

Documentation only: the error bodies are built by `talkies.api.errors` and the middleware, the audio and
text bodies by the services. FastAPI documents a route's JSON 200 and the 422 of the parameters it parses
itself; everything else a client can get is declared here: the error envelope under each status a route
can answer, the guards' statuses (401 token, 421 Host, 403 Origin, 503 draining), and the media types of
bodies that are not JSON (speech audio, transcripts as text / SRT / VTT, server-sent events, staged
files). tests/api/test_fuzz.py holds every response to these declarations.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, Final

from pydantic import BaseModel


class ErrorObject(BaseModel):
    """OpenAI's error object (what the SDKs read)."""

    message: str
    type: str
    param: str | None
    code: str | None


class ErrorBody(BaseModel):
    """Every error: `detail` is the message (what the contract's clients read), `error` OpenAI's object."""

    detail: str
    error: ErrorObject


class ValidationIssue(BaseModel):
    loc: list[str | int]
    msg: str
    type: str


class ValidationErrorBody(BaseModel):
    """422: FastAPI's list of bad fields in `detail`, and the `error` object naming the first."""

    detail: list[ValidationIssue]
    error: ErrorObject


class NotReadyBody(BaseModel):
    """`GET /readyz` while starting or draining."""

    ready: bool
    reason: str
    detail: str
    in_flight: int


_WHY: Final[dict[int, str]] = {
    400: "The request cannot be served as sent: a bad value, undecodable audio, an unsafe staged name, "
    "an incomplete upload, a model of the wrong kind",
    401: "Missing or wrong bearer token (TALKIES_AUTH_TOKEN is set)",
    403: "A browser Origin that may not make state-changing requests here (TALKIES_CORS_ORIGINS)",
    404: "No such model, staged file or voice",
    409: "The model is loaded, in use or being pulled (unload it, or wait for the pull)",
    413: "The upload is over TALKIES_MAX_UPLOAD_BYTES",
    421: "The Host header is not one this server answers (TALKIES_ALLOWED_HOSTS)",
    422: "A field has the wrong type or is out of range",
    429: "The model's queue is full (TALKIES_MAX_QUEUE); retry after Retry-After seconds",
    502: "The external server behind a `process` model failed or could not be reached",
    503: "The engine is unavailable, its load failed, the request waited too long in the queue, "
    "or the server is shutting down (then with Retry-After)",
    504: "The engine made no progress for TALKIES_ENGINE_TIMEOUT",
    507: "The model needs more memory than TALKIES_MEMORY_BUDGET allows (code model_too_large)",
}

_RETRY_AFTER = {"description": "seconds to wait before retrying", "schema": {"type": "integer"}}
_HEADERS: Final[dict[int, dict[str, Any]]] = {
    401: {"WWW-Authenticate": {"required": True, "schema": {"type": "string"}}},
    429: {"Retry-After": {**_RETRY_AFTER, "required": True}},
    503: {"Retry-After": _RETRY_AFTER},
}

GUARDED: Final = (401, 421, 503)
"""Every route behind the bearer token, the Host check and the drain gate."""
WRITE_GUARDED: Final = (*GUARDED, 403)
"""A state-changing route (POST, PUT, DELETE): the Origin check as well."""
RUNS_MODEL: Final = (404, 429, 502, 503, 504, 507)
"""A route that loads or runs a model: unknown slug, full queue, the engine failing to load or to answer."""


def errors(*statuses: int | Iterable[int]) -> dict[int | str, dict[str, Any]]:
    """`responses=` for the given statuses (ints or tuples of them), each with the error envelope."""
    flat: set[int] = set()
    for status in statuses:
        flat.update((status,) if isinstance(status, int) else status)
    declared: dict[int | str, dict[str, Any]] = {}
    for status in sorted(flat):
        entry: dict[str, Any] = {
            "description": _WHY[status],
            "model": ValidationErrorBody if status == 422 else ErrorBody,
        }
        if status in _HEADERS:
            entry["headers"] = _HEADERS[status]
        declared[status] = entry
    return declared


def media(types: Iterable[str], description: str, *, binary: bool) -> dict[int | str, dict[str, Any]]:
    """A 200 whose body may not be JSON: each media type with a string (or binary) schema; JSON among them
    with an object schema. The route sets `response_class=Response`, so FastAPI adds no JSON of its own."""
    content: dict[str, Any] = {}
    for media_type in dict.fromkeys(types):
        if media_type == "application/json":
            content[media_type] = {"schema": {"type": "object"}}
        elif binary:
            content[media_type] = {"schema": {"type": "string", "format": "binary"}}
        else:
            content[media_type] = {"schema": {"type": "string"}}
    return {200: {"description": description, "content": content}}


def not_ready() -> dict[int | str, dict[str, Any]]:
    """`GET /readyz`'s 503: its own body, not the error envelope."""
    return {503: {"description": "Starting or draining", "model": NotReadyBody, "headers": _HEADERS[503]}}


# --- success bodies (documentation of what the routes build as dicts) ---------------------------------


class PullProgress(BaseModel):
    status: str
    completed: int
    total: int | None


class ModelCard(BaseModel):
    """One model as `/v1/models` lists it (OpenAI's fields, then talkies' own)."""

    id: str
    object: str
    created: int
    owned_by: str
    modality: str
    executor: str
    repo: str | None
    languages: list[str]
    aliases: list[str]
    default: bool
    name: str | None
    description: str | None
    loaded: bool
    available: bool
    unavailable_reason: str | None
    load_error: str | None = None
    """Why its last load failed (a child server's last output lines included); null when it did not."""
    installed: bool
    """A complete snapshot is on disk, or the model has nothing to download."""
    download_bytes: int | None
    """The snapshot's size: from the hub's listing once read, else the registry's estimate."""
    pull: PullProgress | None
    """The pull in flight (`POST /api/pull` or a first use), else null."""


class ModelList(BaseModel):
    object: str
    data: list[ModelCard]


class SpeechModelList(BaseModel):
    """`GET /v1/audio/models`, as Open WebUI reads it."""

    object: str
    models: list[ModelCard]


class StagedFile(BaseModel):
    path: str
    size: int
    modified: str


class StagedFileList(BaseModel):
    files: list[StagedFile]


class StoredFile(BaseModel):
    """`PUT /v1/files/{path}`: where it went and how big it is."""

    path: str
    size: int


class DeletedFile(BaseModel):
    path: str
    deleted: bool


def body(model: type[BaseModel], description: str = "Successful Response") -> dict[int | str, dict[str, Any]]:
    """The 200's JSON body, for a route that builds it as a dict (set `response_model=None` on the route)."""
    return {200: {"description": description, "model": model}}
