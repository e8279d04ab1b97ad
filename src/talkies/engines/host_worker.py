"""The worker side of the engine host: one process, one engine, requests multiplexed by id.

`serve()` is the process entry point. It builds the real engine from its executor target, loads it,
answers "ready" (or "load_failed"), then reads requests on its main thread and runs each in a thread pool
of `max_concurrency` threads, so a model configured for concurrent requests gets them concurrently here
too. Replies share the pipe under one lock. When the parent goes away (its end of the pipe closes), the
worker exits at once: an orphaned worker never keeps a model's memory.
"""

from __future__ import annotations

import dataclasses
import importlib
import logging
import multiprocessing.util
import os
import signal
import sys
import threading
from concurrent.futures import ThreadPoolExecutor
from multiprocessing.connection import Connection
from typing import Any, NoReturn

from talkies.engines.base import EngineContext, SpeechRequest, TranscriptionRequest
from talkies.engines.host_ipc import MappedBlocks, SharedArray, pack_error, plain_attributes
from talkies.registry import ModelSpec

log = logging.getLogger(__name__)


def resolve_target(target: str) -> type[Any]:
    module_name, _, class_name = target.partition(":")
    return getattr(importlib.import_module(module_name), class_name)  # type: ignore[no-any-return]


class _Replies:
    def __init__(self, conn: Connection) -> None:
        self._conn = conn
        self._lock = threading.Lock()

    def send(self, message: tuple[Any, ...]) -> None:
        with self._lock:
            self._conn.send(message)


def serve(
    conn: Connection,
    target: str,
    spec: ModelSpec,
    context: EngineContext,
    max_concurrency: int,
    log_level: int,
) -> None:
    # Ctrl-C in a terminal reaches the whole process group; the parent decides when workers stop.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    logging.basicConfig(level=log_level, format=f"%(levelname)s [worker {context.slug}] %(message)s")
    replies = _Replies(conn)
    try:
        engine = resolve_target(target)(spec, context)
        engine.load()
    except BaseException as exc:
        replies.send(("load_failed", pack_error(exc)))
        _exit_now(1)
    replies.send(("ready", os.getpid(), plain_attributes(engine)))

    cancelled: dict[int, threading.Event] = {}
    blocks = MappedBlocks()
    pool = ThreadPoolExecutor(max_workers=max_concurrency, thread_name_prefix=f"engine-{context.slug}")
    while True:
        try:
            message = conn.recv()
        except (EOFError, OSError):
            # The parent is gone: nobody will read an answer, and the memory must go back now.
            os._exit(0)
        kind = message[0]
        if kind == "call":
            _, rid, method, payload = message
            cancelled[rid] = threading.Event()
            pool.submit(_run_call, engine, replies, rid, method, payload, cancelled, blocks)
        elif kind == "cancel":
            event = cancelled.get(message[1])
            if event is not None:
                event.set()
        elif kind == "forget":
            blocks.forget(message[1])
        elif kind == "exit":
            break
    pool.shutdown(wait=False, cancel_futures=True)
    code = 0
    try:
        engine.unload()
    except Exception:
        log.exception("unloading %s failed", context.slug)
        code = 1
    _exit_now(code)


def _exit_now(code: int) -> NoReturn:
    """Exit without the interpreter's teardown, as multiprocessing does for forked children.

    The engine has let go of its files and devices; collecting torch, spaCy, ... module by module takes
    seconds and gives back nothing that the exit does not. multiprocessing's finalizers still run, so
    the semaphores and shared blocks this process registered are released, not reported as leaked.
    """
    try:
        multiprocessing.util._exit_function()  # type: ignore[attr-defined]
    except Exception:
        log.exception("multiprocessing finalizers failed")
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


def _run_call(
    engine: Any,
    replies: _Replies,
    rid: int,
    method: str,
    payload: Any,
    cancelled: dict[int, threading.Event],
    blocks: MappedBlocks,
) -> None:
    try:
        if method == "transcribe":
            _transcribe(engine, replies, rid, payload, blocks)
        elif method == "synthesize":
            _synthesize(engine, replies, rid, payload, cancelled[rid])
        else:
            raise ValueError(f"unknown engine method {method!r}")
    except BaseException as exc:
        replies.send(("error", rid, pack_error(exc)))
    finally:
        cancelled.pop(rid, None)


def _transcribe(
    engine: Any, replies: _Replies, rid: int, payload: tuple[TranscriptionRequest, Any], blocks: MappedBlocks
) -> None:
    request, audio = payload
    if not isinstance(audio, SharedArray):
        replies.send(("result", rid, (engine.transcribe(request_with(request, audio)), False)))
        return
    ref = audio
    audio, one_off = blocks.view(ref)
    try:
        outcome: tuple[Any, ...] = ("result", rid, engine.transcribe(request_with(request, audio)))
    except BaseException as exc:
        outcome = ("error", rid, pack_error(exc))
    # With the call's frames gone, only our name and getrefcount's argument remain unless the engine kept a
    # view of the audio; if it did, the block must not carry the next request's audio.
    retained = sys.getrefcount(audio) > 2
    del audio
    blocks.done(ref, one_off, retained=retained)
    if outcome[0] == "result":
        outcome = ("result", rid, (outcome[2], retained))
    replies.send(outcome)


def request_with(request: TranscriptionRequest, audio: Any) -> TranscriptionRequest:
    return dataclasses.replace(request, audio=audio)


def _synthesize(
    engine: Any, replies: _Replies, rid: int, request: SpeechRequest, cancel: threading.Event
) -> None:
    chunks = engine.synthesize(request)
    try:
        for chunk in chunks:
            if cancel.is_set():
                return
            replies.send(("chunk", rid, chunk))
    finally:
        close = getattr(chunks, "close", None)
        if close is not None:
            close()
    replies.send(("end", rid))
