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
import os
import signal
import sys
import threading
from concurrent.futures import ThreadPoolExecutor
from multiprocessing.connection import Connection
from typing import Any

from talkies.engines.base import EngineContext, SpeechRequest, TranscriptionRequest
from talkies.engines.host_ipc import SharedArray, attach_array, detach, pack_error, plain_attributes
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
        return
    replies.send(("ready", os.getpid(), plain_attributes(engine)))

    cancelled: dict[int, threading.Event] = {}
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
            pool.submit(_run_call, engine, replies, rid, method, payload, cancelled)
        elif kind == "cancel":
            event = cancelled.get(message[1])
            if event is not None:
                event.set()
        elif kind == "exit":
            break
    pool.shutdown(wait=False, cancel_futures=True)
    try:
        engine.unload()
    except Exception:
        log.exception("unloading %s failed", context.slug)
    sys.stdout.flush()
    sys.stderr.flush()


def _run_call(
    engine: Any, replies: _Replies, rid: int, method: str, payload: Any, cancelled: dict[int, threading.Event]
) -> None:
    try:
        if method == "transcribe":
            _transcribe(engine, replies, rid, payload)
        elif method == "synthesize":
            _synthesize(engine, replies, rid, payload, cancelled[rid])
        else:
            raise ValueError(f"unknown engine method {method!r}")
    except BaseException as exc:
        replies.send(("error", rid, pack_error(exc)))
    finally:
        cancelled.pop(rid, None)


def _transcribe(engine: Any, replies: _Replies, rid: int, payload: tuple[TranscriptionRequest, Any]) -> None:
    request, audio = payload
    block = None
    if isinstance(audio, SharedArray):
        audio, block = attach_array(audio)
    try:
        result = engine.transcribe(dataclasses.replace(request, audio=audio))
    finally:
        del audio, request
        if block is not None:
            detach(block)
    replies.send(("result", rid, result))


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
