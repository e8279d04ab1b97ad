"""The staging area under `$TALKIES_DATA_DIR/files/`: safe paths, atomic uploads, streaming reads.

Every path a client sends goes through `split_path`, the one staging-name rule (`NAME_RULE`: valid UTF-8
segments without control characters or backslashes, none empty or starting with `.` or `~`, bounded depth
and length), then the walk from the root happens with `O_NOFOLLOW` on every
component, so a symlink at or under a request path is never followed: reads and deletes answer 404 as if
nothing were there, uploads are refused. Uploads stream into a hidden `.part` file next to their target and
are renamed into place only once complete, so an interrupted or oversized upload leaves nothing behind.
"""

from __future__ import annotations

import builtins
import contextlib
import errno
import mimetypes
import os
import re
import secrets
import stat
import unicodedata
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import unquote_to_bytes

import anyio
import anyio.to_thread

from talkies.errors import InvalidPathError, PayloadTooLargeError, StagedFileNotFoundError

PART_SUFFIX = ".part"
"""Suffix of in-progress uploads and downloads; never listed, never a valid request path."""

READ_CHUNK = 256 * 1024
_WRITE_BUFFER = 1024 * 1024  # bytes gathered before one write hops to a worker thread

_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_EXTRA_TYPES = {
    ".wav": "audio/wav",
    ".flac": "audio/flac",
    ".opus": "audio/ogg",
    ".m4a": "audio/mp4",
    ".pcm": "audio/pcm",
    ".srt": "application/x-subrip",
    ".vtt": "text/vtt",
    ".webm": "audio/webm",
}


MAX_PATH_BYTES = 1024
"""Longest staged path, in UTF-8 bytes."""
MAX_PATH_DEPTH = 16
"""Most segments in a staged path."""
MAX_SEGMENT_BYTES = 255
"""Longest segment, in UTF-8 bytes (what common filesystems take for one name)."""
NAME_RULE = (
    f"a staged path is 1 to {MAX_PATH_DEPTH} segments separated by single '/', at most {MAX_PATH_BYTES} "
    f"bytes in all and {MAX_SEGMENT_BYTES} per segment; each segment is valid UTF-8 without control "
    f"characters or '\\', does not start with '.' or '~', and the last does not end in '{PART_SUFFIX}'"
)
"""The one rule for staging names (`/v1/files`, MCP file tools, `file_path`); `split_path` enforces it."""


def _refuse(path: str, reason: str) -> InvalidPathError:
    shown = path.encode("utf-8", "backslashreplace").decode("utf-8")
    if len(shown) > 120:
        shown = shown[:120] + "..."
    return InvalidPathError(f"invalid path {shown!r}: {reason}. Rule: {NAME_RULE}", param="path")


def _is_control(char: str) -> bool:
    return unicodedata.category(char) in ("Cc", "Zl", "Zp")


def split_path(path: str) -> list[str]:
    """THE staging-name rule (`NAME_RULE`): a client path -> its segments, or InvalidPathError naming it.

    Undecodable bytes reach here as lone surrogates (`decode_raw_path` uses surrogateescape), so invalid
    UTF-8 is refused here too, not just in one transport."""
    if not path:
        raise _refuse(path, "empty")
    try:
        encoded = path.encode("utf-8")
    except UnicodeEncodeError:
        raise _refuse(path, "not valid UTF-8") from None
    if len(encoded) > MAX_PATH_BYTES:
        raise _refuse(path, f"longer than {MAX_PATH_BYTES} bytes")
    if "\\" in path:
        raise _refuse(path, "backslashes are not allowed")
    bad = next((c for c in path if _is_control(c)), None)
    if bad is not None:
        raise _refuse(path, f"control character U+{ord(bad):04X}")
    if path.startswith("/"):
        raise _refuse(path, "a leading '/' (paths are relative to the staging root)")
    segments = path.split("/")
    if len(segments) > MAX_PATH_DEPTH:
        raise _refuse(path, f"more than {MAX_PATH_DEPTH} segments")
    for segment in segments:
        if segment == "":
            raise _refuse(path, "empty segment (double or trailing slash)")
        if segment[0] in ".~":
            raise _refuse(path, f"segment {segment[:40]!r} starts with {segment[0]!r}")
        if len(segment.encode("utf-8")) > MAX_SEGMENT_BYTES:
            raise _refuse(path, f"a segment is longer than {MAX_SEGMENT_BYTES} bytes")
    if segments[-1].endswith(PART_SUFFIX):
        raise _refuse(path, f"the {PART_SUFFIX} suffix is reserved for uploads in progress")
    return segments


def decode_raw_path(raw: bytes) -> str:
    """A percent-encoded URL path (bytes) -> str, undecodable bytes kept as lone surrogates so that
    `split_path` refuses them (a server's own decoding would turn them into U+FFFD and hide them)."""
    return unquote_to_bytes(raw).decode("utf-8", "surrogateescape")


def content_type_for(name: str) -> str:
    suffix = os.path.splitext(name)[1].lower()
    if suffix in _EXTRA_TYPES:
        return _EXTRA_TYPES[suffix]
    guessed, _ = mimetypes.guess_type(name, strict=False)
    return guessed or "application/octet-stream"


def _iso_z(timestamp: float) -> str:
    return datetime.fromtimestamp(timestamp, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass(slots=True)
class OpenedFile:
    """A staged file opened without following symlinks; `chunks()` streams it and closes it."""

    path: Path
    size: int
    content_type: str
    fd: int

    async def chunks(self, chunk_size: int = READ_CHUNK) -> AsyncIterator[bytes]:
        try:
            while True:
                chunk = await anyio.to_thread.run_sync(os.read, self.fd, chunk_size)
                if not chunk:
                    return
                yield chunk
        finally:
            self.close()

    def read_all(self) -> bytes:
        """Blocking: the whole file (callers cap `size` first). Closes the file."""
        try:
            parts = []
            while chunk := os.read(self.fd, READ_CHUNK):
                parts.append(chunk)
            return b"".join(parts)
        finally:
            self.close()

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1


class FileStore:
    """Staged files under one root. Blocking calls are `*_sync`; the async methods run them in a thread."""

    def __init__(self, root: Path, max_upload_bytes: int) -> None:
        root.mkdir(parents=True, exist_ok=True)
        self.root = root.resolve()
        self.max_upload_bytes = max_upload_bytes

    # --- paths --------------------------------------------------------------------------------
    def resolve(self, path: str) -> Path:
        """Absolute path of a client path, refusing anything that could leave the root.

        Raises InvalidPathError for a lexically unsafe path and StagedFileNotFoundError when an
        existing component under the root is a symlink (it is treated as missing, never followed).
        """
        segments = split_path(path)
        current = self.root
        for segment in segments:
            current = current / segment
            try:
                if stat.S_ISLNK(current.lstat().st_mode):
                    raise StagedFileNotFoundError(f"file not found: {path}", param="path")
            except FileNotFoundError:
                break
            except NotADirectoryError:
                break
        resolved = self.root.joinpath(*segments)
        if not resolved.is_relative_to(self.root):  # defence in depth; the lexical checks already hold
            raise InvalidPathError("invalid path: outside the staging area", param="path")
        return resolved

    def _open_parent(self, segments: builtins.list[str], *, create: bool) -> int:
        """fd of the directory holding the last segment, walked with O_NOFOLLOW from the root."""
        fd = os.open(self.root, _DIR_FLAGS)
        try:
            for name in segments[:-1]:
                if create:
                    with contextlib.suppress(FileExistsError):
                        os.mkdir(name, 0o755, dir_fd=fd)
                try:
                    child = os.open(name, _DIR_FLAGS, dir_fd=fd)
                except OSError as exc:
                    raise self._walk_error(exc, segments, create=create) from None
                os.close(fd)
                fd = child
        except BaseException:
            os.close(fd)
            raise
        return fd

    @staticmethod
    def _walk_error(exc: OSError, segments: builtins.list[str], *, create: bool) -> Exception:
        path = "/".join(segments)
        if create and exc.errno in (errno.ELOOP, errno.ENOTDIR):
            return InvalidPathError(f"invalid path: a parent of {path} is not a directory", param="path")
        if exc.errno in (errno.ENOENT, errno.ELOOP, errno.ENOTDIR):
            return StagedFileNotFoundError(f"file not found: {path}", param="path")
        return exc

    # --- listing ------------------------------------------------------------------------------
    def list_sync(self) -> list[dict[str, Any]]:
        files: list[dict[str, Any]] = []
        for dirpath, dirnames, filenames in os.walk(self.root, followlinks=False):
            base = Path(dirpath)
            dirnames[:] = [d for d in dirnames if not (base / d).is_symlink()]
            for name in filenames:
                if name.endswith(PART_SUFFIX):
                    continue
                try:
                    info = (base / name).lstat()
                except FileNotFoundError:
                    continue
                if not stat.S_ISREG(info.st_mode):
                    continue
                rel = (base / name).relative_to(self.root).as_posix()
                files.append({"path": rel, "size": info.st_size, "modified": _iso_z(info.st_mtime)})
        files.sort(key=lambda f: str(f["path"]))
        return files

    async def list(self) -> list[dict[str, Any]]:
        return await anyio.to_thread.run_sync(self.list_sync)

    # --- reading ------------------------------------------------------------------------------
    def open_sync(self, path: str) -> OpenedFile:
        segments = split_path(path)
        parent = self._open_parent(segments, create=False)
        try:
            fd = os.open(
                segments[-1], os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK, dir_fd=parent
            )
        except OSError as exc:
            raise self._walk_error(exc, segments, create=False) from None
        finally:
            os.close(parent)
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            os.close(fd)
            raise StagedFileNotFoundError(f"file not found: {path}", param="path")
        os.set_blocking(fd, True)
        return OpenedFile(self.root.joinpath(*segments), info.st_size, content_type_for(segments[-1]), fd)

    async def open_for_read(self, path: str) -> OpenedFile:
        """Open a staged file (StagedFileNotFoundError when missing, a symlink or not a regular file)."""
        return await anyio.to_thread.run_sync(self.open_sync, path)

    async def existing(self, path: str) -> Path:
        """The absolute path of an existing staged regular file (for `file_path`)."""
        opened = await self.open_for_read(path)
        opened.close()
        return opened.path

    # --- writing ------------------------------------------------------------------------------
    async def put(
        self, path: str, chunks: AsyncIterator[bytes], *, max_bytes: int | None = None
    ) -> dict[str, Any]:
        """Stream `chunks` into `path` atomically. Over the cap -> PayloadTooLargeError, nothing kept."""
        cap = self.max_upload_bytes if max_bytes is None else max_bytes
        segments = split_path(path)
        writer = await anyio.to_thread.run_sync(self._begin_sync, segments)
        size = await write_capped(
            writer,
            chunks,
            cap=cap,
            too_large=lambda: PayloadTooLargeError(f"upload exceeds TALKIES_MAX_UPLOAD_BYTES ({cap} bytes)"),
        )
        return {"path": "/".join(segments), "size": size}

    def put_bytes_sync(self, path: str, data: bytes, *, capped: bool = True) -> dict[str, Any]:
        """Blocking whole-buffer variant (MCP `put_file`; `capped=False` for audio the server made)."""
        if capped and len(data) > self.max_upload_bytes:
            cap = self.max_upload_bytes
            raise PayloadTooLargeError(f"upload exceeds TALKIES_MAX_UPLOAD_BYTES ({cap} bytes)")
        segments = split_path(path)
        writer = self._begin_sync(segments)
        try:
            writer.write(data)
            writer.commit()
        except BaseException:
            writer.abort()
            raise
        return {"path": "/".join(segments), "size": len(data)}

    def begin_write(self, path: str) -> _AtomicWriter:
        """Blocking: a `.part` writer for `path`; `commit()` renames it into place, `abort()` removes it."""
        return self._begin_sync(split_path(path))

    def _begin_sync(self, segments: builtins.list[str]) -> _AtomicWriter:
        created = self._missing_parents(segments)
        parent = self._open_parent(segments, create=True)
        return _AtomicWriter(self, segments, parent, created)

    def _missing_parents(self, segments: builtins.list[str]) -> builtins.list[Path]:
        missing = []
        current = self.root
        for name in segments[:-1]:
            current = current / name
            if not os.path.lexists(current):
                missing.append(current)
        return missing

    # --- deleting -----------------------------------------------------------------------------
    def delete_sync(self, path: str) -> None:
        segments = split_path(path)
        parent = self._open_parent(segments, create=False)
        try:
            try:
                info = os.stat(segments[-1], dir_fd=parent, follow_symlinks=False)
            except OSError as exc:
                raise self._walk_error(exc, segments, create=False) from None
            if not stat.S_ISREG(info.st_mode):
                raise StagedFileNotFoundError(f"file not found: {path}", param="path")
            os.unlink(segments[-1], dir_fd=parent)
        finally:
            os.close(parent)
        self.prune(self.root.joinpath(*segments[:-1]))

    async def delete(self, path: str) -> None:
        await anyio.to_thread.run_sync(self.delete_sync, path)

    def prune(self, directory: Path, stop: Path | None = None) -> None:
        """Remove empty directories from `directory` up to, not including, `stop` (default the root)."""
        stop = self.root if stop is None else stop
        current = directory
        while current not in (stop, self.root) and current.is_relative_to(self.root):
            try:
                current.rmdir()
            except OSError:
                return
            current = current.parent

    def remove_partials(self) -> None:
        """Start-up cleanup: `.part` files left by a crash."""
        for part in _walk_parts(self.root):
            with contextlib.suppress(OSError):
                part.unlink()


_LEGACY_CACHE_NAME = re.compile(r"[0-9a-f]{16}-[A-Za-z0-9._-]+")


def retire_legacy_url_cache(files: FileStore) -> int:
    """Remove URL bodies that versions before the separate URL cache kept in `files/downloads/` (named
    `<16 hex>-<basename>`), where /v1/files could read them back. Returns how many were removed."""
    directory = files.root / "downloads"
    removed = 0
    with contextlib.suppress(FileNotFoundError, NotADirectoryError), os.scandir(directory) as scan:
        for entry in scan:
            if _LEGACY_CACHE_NAME.fullmatch(entry.name) and entry.is_file(follow_symlinks=False):
                with contextlib.suppress(OSError):
                    os.unlink(entry.path)
                    removed += 1
    if removed:
        with contextlib.suppress(OSError):
            directory.rmdir()
    return removed


def _walk_parts(root: Path) -> Iterator[Path]:
    for dirpath, _dirnames, filenames in os.walk(root, followlinks=False):
        for name in filenames:
            if name.endswith(PART_SUFFIX):
                yield Path(dirpath) / name


async def write_capped(
    writer: _AtomicWriter,
    chunks: AsyncIterator[bytes],
    *,
    cap: int,
    too_large: Callable[[], Exception],
    buffer_bytes: int = _WRITE_BUFFER,
) -> int:
    """Stream `chunks` through `writer` with writes off the event loop, and commit; return the size.

    More than `cap` bytes raises `too_large()`; that, any other failure or a cancellation aborts the
    writer, so nothing is left behind."""
    size = 0
    buffer = bytearray()
    try:
        async for chunk in chunks:
            size += len(chunk)
            if size > cap:
                raise too_large()
            buffer += chunk
            if len(buffer) >= buffer_bytes:
                full, buffer = buffer, bytearray()  # hand the buffer over, no copy
                await anyio.to_thread.run_sync(writer.write, full)
        if buffer:
            await anyio.to_thread.run_sync(writer.write, buffer)
        await anyio.to_thread.run_sync(writer.commit)
    except BaseException:
        with anyio.CancelScope(shield=True):
            await anyio.to_thread.run_sync(writer.abort)
        raise
    return size


class _AtomicWriter:
    """A `.part` file beside the target, renamed over it on commit and removed on abort."""

    def __init__(self, store: FileStore, segments: list[str], parent_fd: int, created: list[Path]) -> None:
        self._store = store
        self._segments = segments
        self._parent = parent_fd
        self._created = created
        self._tmp = f".{segments[-1]}.{secrets.token_hex(6)}{PART_SUFFIX}"
        try:
            self._fd = os.open(
                self._tmp,
                os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC,
                0o644,
                dir_fd=parent_fd,
            )
        except BaseException:
            os.close(parent_fd)
            self._prune_created()
            raise

    def write(self, data: bytes | bytearray) -> None:
        view = memoryview(data)
        while view:
            written = os.write(self._fd, view)
            view = view[written:]

    def commit(self) -> None:
        os.close(self._fd)
        self._fd = -1
        try:
            target = os.stat(self._segments[-1], dir_fd=self._parent, follow_symlinks=False)
        except FileNotFoundError:
            target = None
        if target is not None and stat.S_ISDIR(target.st_mode):
            raise InvalidPathError(f"invalid path: {'/'.join(self._segments)} is a directory", param="path")
        os.replace(self._tmp, self._segments[-1], src_dir_fd=self._parent, dst_dir_fd=self._parent)
        os.close(self._parent)
        self._parent = -1

    def abort(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1
        if self._parent >= 0:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self._tmp, dir_fd=self._parent)
            os.close(self._parent)
            self._parent = -1
        self._prune_created()

    def _prune_created(self) -> None:
        if self._created:
            self._store.prune(self._created[-1], stop=self._created[0].parent)
