"""The one place that maps domain errors to HTTP status codes and the error envelope.

Every application error answers::

    {"detail": "<message>", "error": {"message": ..., "type": ..., "param": ..., "code": ...}}

`detail` is what the contract's clients read; `error` is what the OpenAI SDKs read. Validation errors
(422) keep FastAPI's structured array in `detail` and carry the same `error` object as every other error
(its message names the first bad field).
"""

from __future__ import annotations

import re

from fastapi import FastAPI, Request
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from talkies import errors as e

# Most specific first; the first isinstance match wins.
_STATUS: tuple[tuple[type[e.TalkiesError], int, str], ...] = (
    (e.BadRequestError, 400, "invalid_request_error"),
    (e.UnauthorizedError, 401, "authentication_error"),
    (e.NotFoundError, 404, "not_found_error"),
    (e.ConflictError, 409, "conflict_error"),
    (e.PayloadTooLargeError, 413, "invalid_request_error"),
    (e.QueueFullError, 429, "rate_limit_error"),
    (e.ClientDisconnectedError, 499, "client_closed_request"),
    (e.ServiceUnavailableError, 503, "service_unavailable_error"),
    (e.ModelTooLargeError, 507, "insufficient_memory_error"),
    (e.UpstreamCrashedError, 502, "upstream_error"),
    (e.UpstreamError, 502, "upstream_error"),
    (e.EngineTimeoutError, 504, "timeout_error"),
    (e.TalkiesError, 500, "server_error"),
)


def error_code(exc: Exception) -> str:
    """The error's `code`: its class name in snake case without `Error` (QueueFullError -> queue_full)."""
    name = type(exc).__name__.removesuffix("Error")
    return re.sub(r"(?<!^)(?=[A-Z])", "_", name).lower()


def status_for(exc: e.TalkiesError) -> tuple[int, str]:
    for cls, status, kind in _STATUS:
        if isinstance(exc, cls):
            return status, kind
    return 500, "server_error"


def envelope(
    message: str, kind: str, *, param: str | None = None, code: str | None = None
) -> dict[str, object]:
    return {"detail": message, "error": {"message": message, "type": kind, "param": param, "code": code}}


def error_response(exc: e.TalkiesError) -> JSONResponse:
    status, kind = status_for(exc)
    headers = {}
    if isinstance(exc, e.QueueFullError | e.ShuttingDownError):
        headers["Retry-After"] = str(exc.retry_after)
    if isinstance(exc, e.UnauthorizedError):
        headers["WWW-Authenticate"] = "Bearer"
    body = envelope(exc.message, kind, param=exc.param, code=error_code(exc))
    return JSONResponse(body, status_code=status, headers=headers)


async def _talkies_error(_: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, e.TalkiesError)
    return error_response(exc)


async def _http_error(_: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, StarletteHTTPException)
    kind = "not_found_error" if exc.status_code == 404 else "invalid_request_error"
    return JSONResponse(
        envelope(str(exc.detail), kind, code=str(exc.status_code)),
        status_code=exc.status_code,
        headers=exc.headers,
    )


def validation_body(errors: list[dict[str, object]]) -> dict[str, object]:
    """422 body: FastAPI's array in `detail`, plus the OpenAI `error` object naming the first bad field."""
    first = errors[0] if errors else {}
    loc = first.get("loc", ())
    parts = (
        [str(p) for p in loc if p not in ("body", "query", "path")] if isinstance(loc, list | tuple) else []
    )
    param = ".".join(parts) or None
    message = str(first.get("msg", "invalid request"))
    if param:
        message = f"{param}: {message}"
    if len(errors) > 1:
        message += f" (and {len(errors) - 1} more)"
    body = envelope(message, "invalid_request_error", param=param, code="invalid_value")
    body["detail"] = jsonable_encoder(errors)
    return body


async def _validation_error(_: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    return JSONResponse(validation_body(list(exc.errors())), status_code=422)


def install_error_handlers(app: FastAPI) -> None:
    app.add_exception_handler(e.TalkiesError, _talkies_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(StarletteHTTPException, _http_error)
