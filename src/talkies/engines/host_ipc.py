"""What crosses the pipe between the engine host (`talkies.engines.host`) and its worker process.

Messages are tuples, pickled by `multiprocessing.connection`:

    parent -> worker   ("call", rid, method, payload)   method: "transcribe" | "synthesize"
                       ("cancel", rid)                  stop a synthesis the caller abandoned
                       ("exit",)                        unload the engine and exit
    worker -> parent   ("ready", pid, attributes)       after load(); attributes = the engine's plain data
                       ("load_failed", RemoteError)
                       ("result", rid, value)           transcribe's result
                       ("chunk", rid, AudioChunk)       one synthesized chunk, as soon as it is produced
                       ("end", rid)                     the synthesis is complete
                       ("error", rid, RemoteError)

Large arrays do not travel through the pipe: the sender writes them once into a POSIX shared-memory block
and sends its name (`SharedArray`); the receiver maps the block without copying.
"""

from __future__ import annotations

import contextlib
import pickle
import traceback
from dataclasses import dataclass
from multiprocessing import shared_memory
from typing import Any

import numpy as np
import numpy.typing as npt

from talkies import errors
from talkies.errors import EngineError, ModelLoadError, TalkiesError

INLINE_ARRAY_BYTES = 64 * 1024
"""Arrays up to this size are pickled inline: creating and mapping a shared block costs more than copying."""

_PLAIN_TYPES = (bool, int, float, str, bytes, type(None))


@dataclass(frozen=True, slots=True)
class SharedArray:
    """A reference to an array that lives in a shared-memory block."""

    name: str
    shape: tuple[int, ...]
    dtype: str


def share_array(
    array: npt.NDArray[Any],
) -> tuple[SharedArray | npt.NDArray[Any], shared_memory.SharedMemory | None]:
    """Small arrays are returned as is; larger ones are copied once into a new shared block.

    The caller owns the returned block: it must `release()` it once the receiver is done with it.
    """
    if array.nbytes <= INLINE_ARRAY_BYTES:
        return array, None
    block = shared_memory.SharedMemory(create=True, size=array.nbytes)
    view: npt.NDArray[Any] = np.ndarray(array.shape, dtype=array.dtype, buffer=block.buf)
    view[...] = array
    del view
    return SharedArray(block.name, tuple(array.shape), array.dtype.str), block


def release(block: shared_memory.SharedMemory | None) -> None:
    if block is None:
        return
    block.close()
    with contextlib.suppress(FileNotFoundError):
        block.unlink()


def attach_array(ref: SharedArray) -> tuple[npt.NDArray[Any], shared_memory.SharedMemory]:
    """Map a shared block as an array (no copy); the engine's writes, if any, land in the block."""
    block = shared_memory.SharedMemory(name=ref.name)
    return np.ndarray(ref.shape, dtype=np.dtype(ref.dtype), buffer=block.buf), block


def detach(block: shared_memory.SharedMemory) -> None:
    """Unmap a block in the receiver. An engine that kept a view alive keeps the mapping until it lets go."""
    with contextlib.suppress(BufferError):
        block.close()


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
