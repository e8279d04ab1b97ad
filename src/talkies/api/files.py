"""`/v1/files`: the staging area over HTTP (list, raw PUT, streamed GET, DELETE)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, StreamingResponse
from starlette.requests import ClientDisconnect

from talkies.api.deps import FilesDep
from talkies.errors import ClientDisconnectedError, PayloadTooLargeError

router = APIRouter(prefix="/v1/files", tags=["files"])


def _declared_length(request: Request) -> int | None:
    value = request.headers.get("content-length")
    return int(value) if value and value.isdigit() else None


@router.get("")
async def list_files(files: FilesDep) -> dict[str, Any]:
    return {"files": await files.list()}


@router.put("/{path:path}", status_code=201)
async def put_file(path: str, request: Request, files: FilesDep) -> JSONResponse:
    declared = _declared_length(request)
    if declared is not None and declared > files.max_upload_bytes:
        # Refused before a byte of the body is read.
        raise PayloadTooLargeError(
            f"upload of {declared} bytes exceeds TALKIES_MAX_UPLOAD_BYTES ({files.max_upload_bytes} bytes)"
        )
    try:
        info = await files.put(path, request.stream())
    except ClientDisconnect:
        raise ClientDisconnectedError("client disconnected during the upload; nothing was stored") from None
    return JSONResponse(info, status_code=201)


@router.get("/{path:path}")
async def get_file(path: str, files: FilesDep) -> StreamingResponse:
    opened = await files.open_for_read(path)  # 404 / 400 before the stream starts
    return StreamingResponse(
        opened.chunks(),
        media_type=opened.content_type,
        headers={"Content-Length": str(opened.size)},
    )


@router.delete("/{path:path}")
async def delete_file(path: str, files: FilesDep) -> dict[str, Any]:
    await files.delete(path)
    return {"path": path.removeprefix("/"), "deleted": True}
