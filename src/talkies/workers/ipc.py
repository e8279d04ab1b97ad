"""What crosses the pipe between the engine host (`talkies.workers`) and its worker process.

Messages are tuples, pickled by `multiprocessing.connection`:

    parent -> worker   ("call", rid, method, payload, slug)  method: "transcribe" | "synthesize" on the
                                                        engine of `slug` (or "transcribe_stream");
                                                        "attach" (payload: target, spec, context) loads
                                                        one more engine into this worker,
                                                        "detach" unloads one (see SnapshotEngine's shared
                                                        weights); both answer "result"
                       ("cancel", rid)                  the caller abandoned the call: stop at the next
                                                        step (the worker still ends it with "end"/"error")
                       ("more", rid)                    the parent consumed a chunk: one more may come
                       ("forget", name)                 unmap a shared block the parent retired
                       ("exit",)                        unload every engine and exit
    worker -> parent   ("ready", pid, attributes)       after load(); attributes = the engine's plain data
                       ("load_failed", RemoteError)
                       ("result", rid, (value, retained))  transcribe's result; retained: the engine
                                                        may still hold the audio (its block is retired)
                       ("chunk", rid, AudioChunk)       one synthesized chunk, as soon as it is produced
                                                        and the parent has room (at most CHUNK_WINDOW
                                                        unconsumed chunks per call: backpressure)
                       ("progress", rid)                the engine finished a step (a segment): the call
                                                        is alive; the engine timeout starts again
                       ("chunk", rid, Segment)          "transcribe_stream": one decoded segment; the
                                                        call ends with ("result", rid, (result, retained))
                       ("end", rid)                     the synthesis is complete
                       ("error", rid, RemoteError)

Large arrays do not travel through the pipe: the sender writes them once into a POSIX shared-memory block
and sends its name (`SharedArray`); the receiver maps the block without copying. Blocks are reused from
request to request (`BlockPool` / `MappedBlocks`), so a request pays for one copy and no page faults.

Shared memory is a tmpfs (`/dev/shm`, 64 MB in a default Docker container) that the kernel does not reserve:
writing past what is free kills the process with SIGBUS. So a new block is only made when `/dev/shm` has
room for it plus `SHM_HEADROOM_BYTES`; otherwise the array goes through the pipe (pickled, one more copy)
and a warning says to raise the container's `--shm-size`.
"""

from __future__ import annotations

import contextlib
import logging
import os
import pickle
import threading
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from multiprocessing import shared_memory
from typing import Any

import numpy as np
import numpy.typing as npt

from talkies import errors
from talkies.errors import EngineError, ModelLoadError, TalkiesError

INLINE_ARRAY_BYTES = 64 * 1024
"""Arrays up to this size (2 s of 16 kHz audio) are pickled inline; larger ones go through shared memory."""

REUSE_MAX_BYTES = 16 * 1024 * 1024
"""Blocks up to this size (4 min of audio) are kept and reused; larger ones are made for one request."""

SHM_DIR = "/dev/shm"
"""Where POSIX shared memory lives on Linux."""
SHM_HEADROOM_BYTES = 8 * 1024 * 1024
"""Free space left in SHM_DIR for everything else when a block is made."""

_GRANULE = 1024 * 1024
log = logging.getLogger(__name__)


def shm_free_bytes() -> int | None:
    """Free bytes in SHM_DIR, or None where it cannot be measured (then blocks are made as before)."""
    try:
        info = os.statvfs(SHM_DIR)
    except OSError:
        return None
    return info.f_bavail * info.f_frsize


_PLAIN_TYPES = (bool, int, float, str, bytes, type(None))


@dataclass(frozen=True, slots=True)
class SharedArray:
    """A reference to an array that lives in a shared-memory block."""

    name: str
    shape: tuple[int, ...]
    dtype: str
    reusable: bool  # the receiver may keep the block mapped: it will carry later requests' arrays


class BlockPool:
    """The sender's shared-memory blocks for one worker.

    A fresh block costs a page fault per page on both sides, which for 5 s of audio is more than the
    copy itself; so blocks up to REUSE_MAX_BYTES are reused (the worker maps each one once) and at most
    `keep` of them stay around. `forget(name)` tells the worker to unmap a block that is retired.
    """

    def __init__(self, keep: int, forget: Callable[[str], None]) -> None:
        self._keep = keep
        self._forget = forget
        self._free: list[shared_memory.SharedMemory] = []
        self._lock = threading.Lock()
        self._closed = False

    def put(self, array: npt.NDArray[Any]) -> tuple[SharedArray, shared_memory.SharedMemory] | None:
        """Copy `array` into a block (one copy). Hand the block back with `give_back` after the reply.
        None when /dev/shm has no room for a new block: the caller sends the array through the pipe."""
        nbytes = max(1, array.nbytes)
        reusable = nbytes <= REUSE_MAX_BYTES
        block = self._take(nbytes) if reusable else None
        if block is None:
            size = -(-nbytes // _GRANULE) * _GRANULE if reusable else nbytes
            free = shm_free_bytes()
            if free is not None and free < size + SHM_HEADROOM_BYTES:
                log.warning(
                    "%s has %d MB free, too little for a %d MB block: sending the audio through the pipe "
                    "instead (give the container more, e.g. docker run --shm-size=1g)",
                    SHM_DIR,
                    free // 2**20,
                    -(-size // 2**20),
                )
                return None
            block = shared_memory.SharedMemory(create=True, size=size)
        view: npt.NDArray[Any] = np.ndarray(array.shape, dtype=array.dtype, buffer=block.buf)
        view[...] = array
        del view
        return SharedArray(block.name, tuple(array.shape), array.dtype.str, reusable), block

    def _take(self, nbytes: int) -> shared_memory.SharedMemory | None:
        with self._lock:
            fitting = [b for b in self._free if b.size >= nbytes]
            if not fitting:
                return None
            block = min(fitting, key=lambda b: b.size)
            self._free.remove(block)
            return block

    def give_back(self, ref: SharedArray, block: shared_memory.SharedMemory, *, retained: bool) -> None:
        """`retained`: the engine may still hold the array (or the call's outcome is unknown): retire it."""
        if ref.reusable and not retained:
            with self._lock:
                if not self._closed:
                    self._free.append(block)
                    if len(self._free) <= self._keep:
                        return
                    block = min(self._free, key=lambda b: b.size)
                    self._free.remove(block)
        if ref.reusable:
            self._forget(block.name)
        release(block)

    def close(self) -> None:
        with self._lock:
            self._closed = True
            free, self._free = self._free, []
        for block in free:
            release(block)


def release(block: shared_memory.SharedMemory) -> None:
    block.close()
    with contextlib.suppress(FileNotFoundError):
        block.unlink()


class MappedBlocks:
    """The receiver's side: reusable blocks stay mapped until the sender retires them."""

    def __init__(self) -> None:
        self._mapped: dict[str, shared_memory.SharedMemory] = {}
        self._pinned: list[shared_memory.SharedMemory] = []  # blocks an engine kept a view of
        self._lock = threading.Lock()

    def view(self, ref: SharedArray) -> tuple[npt.NDArray[Any], shared_memory.SharedMemory | None]:
        """The array (no copy) and, for a one-off block, the mapping to `done()` with after the call."""
        with self._lock:
            block = self._mapped.get(ref.name)
            if block is None:
                block = shared_memory.SharedMemory(name=ref.name)
                if ref.reusable:
                    self._mapped[ref.name] = block
        array: npt.NDArray[Any] = np.ndarray(ref.shape, dtype=np.dtype(ref.dtype), buffer=block.buf)
        return array, None if ref.reusable else block

    def done(self, ref: SharedArray, one_off: shared_memory.SharedMemory | None, *, retained: bool) -> None:
        block = one_off
        if retained:
            with self._lock:
                block = self._mapped.pop(ref.name, None) or one_off
                if block is not None:
                    self._pinned.append(block)  # unmapped only when the worker exits
            return
        if block is not None:
            block.close()

    def close(self) -> None:
        """Unmap every block (at exit; the parent owns and unlinks them)."""
        with self._lock:
            blocks = [*self._mapped.values(), *self._pinned]
            self._mapped.clear()
            self._pinned.clear()
        for block in blocks:
            with contextlib.suppress(BufferError):
                block.close()

    def forget(self, name: str) -> None:
        with self._lock:
            block = self._mapped.pop(name, None)
        if block is not None:
            try:
                block.close()
            except BufferError:
                self._pinned.append(block)


# --- errors --------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class RemoteError:
    """An exception raised in the worker, in a form the parent can always unpickle."""

    type_name: str
    message: str
    traceback: str
    pickled: bytes | None  # the exception itself, when it survives a pickle round trip


class RemoteTraceback(Exception):
    """Carries the worker's traceback as the `__cause__` of the re-raised exception, for the logs."""

    def __str__(self) -> str:
        return str(self.args[0])


def pack_error(exc: BaseException) -> RemoteError:
    text = "".join(traceback.format_exception(exc))
    pickled: bytes | None
    try:
        pickled = pickle.dumps(exc)
        pickle.loads(pickled)
    except Exception:
        pickled = None
    message = exc.message if isinstance(exc, TalkiesError) else str(exc)
    return RemoteError(type(exc).__name__, message, text, pickled)


def unpack_error(remote: RemoteError, slug: str, *, loading: bool) -> BaseException:
    """The exception to raise in the parent: the worker's own exception (type, message and attributes kept)
    when it can be rebuilt, else a domain error of the same name, else ModelLoadError / EngineError whose
    message matches what the pool writes for the same failure in-process."""
    exc: BaseException | None = None
    if remote.pickled is not None:
        try:
            exc = pickle.loads(remote.pickled)
        except Exception:
            exc = None
    if exc is None:
        cls = getattr(errors, remote.type_name, None)
        if isinstance(cls, type) and issubclass(cls, TalkiesError) and cls is not errors.QueueFullError:
            exc = cls(remote.message)
        elif loading:
            exc = ModelLoadError(f"model {slug!r} failed to load: {remote.type_name}: {remote.message}")
        else:
            exc = EngineError(f"model {slug!r}: {remote.type_name}: {remote.message}")
    exc.__cause__ = RemoteTraceback(f"\n\nin the engine worker of {slug!r}:\n{remote.traceback}")
    return exc


def plain_attributes(engine: object) -> dict[str, Any]:
    """The engine's public data attributes that are plain values (can_translate, batches_regions, ...)."""
    names = set(getattr(engine, "__dict__", {}))
    for klass in type(engine).__mro__:
        names.update(vars(klass))
        names.update(getattr(klass, "__slots__", ()))
    found: dict[str, Any] = {}
    for name in names:
        if name.startswith("_"):
            continue
        try:
            value = getattr(engine, name)
        except Exception:
            continue
        if isinstance(value, _PLAIN_TYPES) or (
            isinstance(value, tuple | frozenset) and all(isinstance(v, _PLAIN_TYPES) for v in value)
        ):
            found[name] = value
    return found
