"""Multipart uploads streamed to disk with the size cap enforced while reading.

FastAPI's `UploadFile` buffers the whole body (in a spooled file) before the handler runs, so a 5 GB upload
is read to the end before anyone can answer 413. Here the body is pulled from the ASGI receive channel
chunk by chunk: a `Content-Length` over the cap answers 413 before a byte is read, a byte counter on
the receive channel stops a chunked upload as soon as it passes the cap, and the file part goes straight
into a temporary file (written from a worker thread), so memory stays flat whatever the size.
`receive_form` is an async context manager: the temporary file is removed however the request ends. A
caller's `on_field` hook sees each text field as it ends, so a request can be refused (429, a full queue)
before a file part that follows the field is read. A body
that ends before its closing boundary answers 400 `incomplete upload`; a client that hangs up mid-body raises
starlette's `ClientDisconnect`, which the request-context middleware logs as one 499 line.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import anyio.to_thread
from fastapi import Request
from python_multipart.exceptions import FormParserError
from python_multipart.multipart import MultipartParser, MultipartState, parse_options_header

from talkies.errors import BadRequestError, PayloadTooLargeError

FORM_OVERHEAD_BYTES = 64 * 1024
"""Room for the multipart envelope and the text fields on top of the file cap."""
MAX_FIELDS = 64
MAX_FIELD_BYTES = 64 * 1024
FLUSH_BYTES = 1024 * 1024
"""File bytes collected before one write in a worker thread."""
TEMP_PREFIX = "upload-"


@dataclass
class UploadedFile:
    field: str
    filename: str | None
    content_type: str | None
    path: Path
    size: int = 0


@dataclass
class ReceivedForm:
    fields: dict[str, list[str]] = field(default_factory=dict)
    files: dict[str, UploadedFile] = field(default_factory=dict)

    def get(self, name: str) -> str | None:
        values = self.fields.get(name)
        return values[-1] if values else None


class _Part:
    def __init__(self) -> None:
        self.headers: dict[bytes, bytes] = {}
        self.name = ""
        self.filename: str | None = None
        self.value = bytearray()
        self.file: UploadedFile | None = None
        self.handle: IO[bytes] | None = None
        self.pending = bytearray()


class _FormReader:
    """python-multipart callbacks collecting fields and staging file parts; I/O is left to the caller."""

    def __init__(
        self,
        tmp_dir: Path,
        max_file_bytes: int,
        on_field: Callable[[str, str], None] | None = None,
        field_limits: Mapping[str, int] | None = None,
    ) -> None:
        self.tmp_dir = tmp_dir
        self.max_file_bytes = max_file_bytes
        self.on_field = on_field
        self.field_limits = field_limits or {}
        self.form = ReceivedForm()
        self.part = _Part()
        self.header_field = bytearray()
        self.header_value = bytearray()
        self.to_flush: list[_Part] = []
        self.to_close: list[_Part] = []
        self.handles: list[IO[bytes]] = []

    def callbacks(self) -> Any:
        return {
            "on_part_begin": self.on_part_begin,
            "on_part_data": self.on_part_data,
            "on_part_end": self.on_part_end,
            "on_header_field": lambda d, s, e: self.header_field.extend(d[s:e]),
            "on_header_value": lambda d, s, e: self.header_value.extend(d[s:e]),
            "on_header_end": self.on_header_end,
            "on_headers_finished": self.on_headers_finished,
        }

    def on_part_begin(self) -> None:
        self.part = _Part()
        if sum(len(v) for v in self.form.fields.values()) + len(self.form.files) >= MAX_FIELDS:
            raise BadRequestError(f"too many form fields (at most {MAX_FIELDS})")

    def on_header_end(self) -> None:
        self.part.headers[bytes(self.header_field).lower()] = bytes(self.header_value)
        self.header_field.clear()
        self.header_value.clear()

    def on_headers_finished(self) -> None:
        part = self.part
        _, options = parse_options_header(part.headers.get(b"content-disposition", b""))
        part.name = options.get(b"name", b"").decode("utf-8", "replace")
        if b"filename" not in options:
            return
        part.filename = options[b"filename"].decode("utf-8", "replace")
        if part.name in self.form.files:
            raise BadRequestError(f"more than one file in form field {part.name!r}", param=part.name)
        # mkstemp is a quick local call; the writes (the slow part) happen in a worker thread.
        fd, name = tempfile.mkstemp(prefix=TEMP_PREFIX, dir=self.tmp_dir)
        part.handle = os.fdopen(fd, "wb")
        self.handles.append(part.handle)
        ctype = part.headers.get(b"content-type")
        part.file = UploadedFile(
            field=part.name,
            filename=part.filename,
            content_type=ctype.decode("latin-1") if ctype else None,
            path=Path(name),
        )
        self.form.files[part.name] = part.file

    def on_part_data(self, data: bytes, start: int, end: int) -> None:
        part = self.part
        if part.file is None:
            part.value.extend(data[start:end])
            limit = self.field_limits.get(part.name, MAX_FIELD_BYTES)
            if len(part.value) > limit:
                raise BadRequestError(f"form field {part.name!r} is over {limit} bytes", param=part.name)
            return
        part.file.size += end - start
        if part.file.size > self.max_file_bytes:
            raise too_large(self.max_file_bytes)
        part.pending.extend(data[start:end])
        if len(part.pending) >= FLUSH_BYTES and part not in self.to_flush:
            self.to_flush.append(part)

    def on_part_end(self) -> None:
        part = self.part
        if part.file is None:
            value = part.value.decode("utf-8", "replace")
            self.form.fields.setdefault(part.name, []).append(value)
            if self.on_field is not None:
                self.on_field(part.name, value)  # may refuse the request before a later file is stored
        else:
            self.to_close.append(part)

    async def flush(self) -> None:
        for part in [*self.to_flush, *self.to_close]:
            if part.pending and part.handle is not None:
                data = bytes(part.pending)
                part.pending.clear()
                await anyio.to_thread.run_sync(part.handle.write, data)
        for part in self.to_close:
            if part.handle is not None:
                await anyio.to_thread.run_sync(part.handle.close)
        self.to_flush.clear()
        self.to_close.clear()


def too_large(limit: int) -> PayloadTooLargeError:
    return PayloadTooLargeError(
        f"upload is larger than {limit} bytes (TALKIES_MAX_UPLOAD_BYTES)", param="file"
    )


@contextlib.asynccontextmanager
async def receive_form(
    request: Request,
    *,
    max_file_bytes: int,
    tmp_dir: Path,
    on_field: Callable[[str, str], None] | None = None,
    field_limits: Mapping[str, int] | None = None,
    extra_bytes: int = 0,
) -> AsyncIterator[ReceivedForm]:
    """Parse a multipart body from `request`'s receive channel; files are removed on exit.

    `on_field(name, value)` runs as each text field ends, before any part after it is read: an error it
    raises ends the request there (admission: a full queue refused before the upload is stored).
    `field_limits` raises the 64 KiB cap of named text fields (known-speaker data URLs); `extra_bytes` is
    what those fields may add to the whole body on top of the file cap."""
    ctype, params = parse_options_header(request.headers.get("content-type", ""))
    if ctype != b"multipart/form-data" or b"boundary" not in params:
        raise BadRequestError("expected a multipart/form-data body with a 'file' field", param="file")
    limit = max_file_bytes + FORM_OVERHEAD_BYTES + extra_bytes
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise too_large(max_file_bytes)
    await anyio.to_thread.run_sync(lambda: tmp_dir.mkdir(parents=True, exist_ok=True))
    reader = _FormReader(tmp_dir, max_file_bytes, on_field, field_limits)
    try:
        parser = MultipartParser(params[b"boundary"], reader.callbacks())
        received = 0
        async for chunk in request.stream():
            received += len(chunk)
            if received > limit:
                raise too_large(max_file_bytes)
            parser.write(chunk)
            await reader.flush()
        parser.finalize()
        if parser.state != MultipartState.END:
            # python-multipart's finalize() checks nothing: a body cut short would pass as complete.
            raise BadRequestError(
                "incomplete upload: the multipart body ended before its closing boundary; nothing was kept",
                param="file",
            )
        await reader.flush()
        yield reader.form
    except FormParserError as exc:
        raise BadRequestError(f"malformed multipart body: {exc}") from None
    finally:
        for handle in reader.handles:
            handle.close()
        for upload in reader.form.files.values():
            upload.path.unlink(missing_ok=True)


def remove_stale_uploads(tmp_dir: Path) -> int:
    """Start-up: remove upload temp files a crash left in `tmp_dir` (nothing is in flight yet)."""
    removed = 0
    with contextlib.suppress(FileNotFoundError), os.scandir(tmp_dir) as scan:
        for entry in scan:
            if entry.name.startswith(TEMP_PREFIX) and entry.is_file(follow_symlinks=False):
                with contextlib.suppress(OSError):
                    os.unlink(entry.path)
                    removed += 1
    return removed
