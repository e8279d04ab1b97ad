"""`/v1/files`: the staging area over HTTP (list, raw PUT, streamed GET, DELETE)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request, Response
from fastapi.responses import JSONResponse, StreamingResponse
from starlette.convertors import PathConvertor, register_url_convertor
from starlette.requests import ClientDisconnect

from talkies.api.deps import FilesDep
from talkies.api.responses import (
    GUARDED,
    WRITE_GUARDED,
    DeletedFile,
    StagedFileList,
    StoredFile,
    body,
    errors,
    media,
)
from talkies.errors import ClientDisconnectedError, PayloadTooLargeError
from talkies.services.files import decode_raw_path

PREFIX = "/v1/files"
router = APIRouter(prefix=PREFIX, tags=["files"])


class _AnyPath(PathConvertor):
    """`path`, newlines included, so a name with a control character reaches the staging-name rule (400)
    instead of missing the route (404)."""

    regex = r"[\s\S]*"


register_url_convertor("stagedpath", _AnyPath())


def _staged_path(request: Request, path: str) -> str:
    """The path as the client sent it: decoded from the raw request path, so bytes that are not UTF-8 reach
    the staging-name rule as such instead of as the U+FFFD the server's own decoding would make of them.

    The name is what follows the route's own prefix: the shortest run of raw segments from the start that
    decodes to (root path +) `/v1/files`, however it was spelled (`/v1/%66iles/...`). A `/v1/files/`
    further on is part of the name."""
    raw = request.scope.get("raw_path")
    if not isinstance(raw, bytes):
        return path
    raw = raw.split(b"?", 1)[0]
    prefix = request.scope.get("root_path", "") + PREFIX
    longest = 3 * len(prefix.encode("utf-8"))  # the prefix with every byte percent-encoded
    at = raw.find(b"/", 1)
    while 0 < at <= longest:
        if decode_raw_path(raw[:at]) == prefix:
            return decode_raw_path(raw[at + 1 :])
        at = raw.find(b"/", at + 1)
    return path  # the prefix was spelled with an encoded slash: the server's own decoding is all there is


def _declared_length(request: Request) -> int | None:
    value = request.headers.get("content-length")
    return int(value) if value and value.isdigit() else None


@router.get("", response_model=None, responses={**body(StagedFileList), **errors(GUARDED)})
async def list_files(files: FilesDep) -> dict[str, Any]:
    return {"files": await files.list()}


_RAW_BODY = {
    "requestBody": {
        "required": True,
        "content": {"application/octet-stream": {"schema": {"type": "string", "format": "binary"}}},
    }
}
"""The body is the file itself, read as a stream (any Content-Type)."""


@router.put(
    "/{path:stagedpath}",
    status_code=201,
    openapi_extra=_RAW_BODY,
    responses={201: {"description": "Stored", "model": StoredFile}, **errors(WRITE_GUARDED, 400, 413, 422)},
)
async def put_file(path: str, request: Request, files: FilesDep) -> JSONResponse:
    declared = _declared_length(request)
    if declared is not None and declared > files.max_upload_bytes:
        # Refused before a byte of the body is read.
        raise PayloadTooLargeError(
            f"upload of {declared} bytes exceeds TALKIES_MAX_UPLOAD_BYTES ({files.max_upload_bytes} bytes)"
        )
    try:
        info = await files.put(_staged_path(request, path), request.stream())
    except ClientDisconnect:
        raise ClientDisconnectedError("client disconnected during the upload; nothing was stored") from None
    return JSONResponse(info, status_code=201)


@router.get(
    "/{path:stagedpath}",
    response_class=Response,
    responses={
        **media(["*/*"], "The file, typed by its name's extension", binary=True),
        **errors(GUARDED, 400, 404, 422),
    },
)
async def get_file(path: str, request: Request, files: FilesDep) -> StreamingResponse:
    opened = await files.open_for_read(_staged_path(request, path))  # 404 / 400 before the stream starts
    return StreamingResponse(
        opened.chunks(),
        media_type=opened.content_type,
        headers={"Content-Length": str(opened.size)},
    )


@router.delete(
    "/{path:stagedpath}",
    response_model=None,
    responses={**body(DeletedFile), **errors(WRITE_GUARDED, 400, 404, 422)},
)
async def delete_file(path: str, request: Request, files: FilesDep) -> dict[str, Any]:
    staged = _staged_path(request, path)
    await files.delete(staged)
    return {"path": staged, "deleted": True}
