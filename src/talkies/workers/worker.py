"""The worker side of the engine host: one process, its engines, requests multiplexed by id.

`serve()` is the process entry point. It builds the real engine from its executor target, loads it,
answers "ready" (or "load_failed"), then reads requests on its main thread and runs each in a thread pool,
so a model configured for concurrent requests gets them concurrently here too (the parent's pool bounds
each model's concurrency). Usually a worker holds one engine; engines that share weights (several slugs
on one repository) are attached to the worker of the first one, and each call names its engine's slug.
Replies share the pipe under one lock. When the parent goes away (its end of the pipe closes), the worker
exits at once: an orphaned worker never keeps a model's memory.
"""

from __future__ import annotations

import dataclasses
import importlib
import logging
import os
import signal
import sys
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from multiprocessing.connection import Connection
from typing import Any, NoReturn

from talkies.engines.base import (
    CallControl,
    EngineContext,
    SpeechRequest,
    TranscriptionRequest,
    bind_call,
    unbind_call,
)
from talkies.registry import ModelSpec
from talkies.workers.ipc import MappedBlocks, SharedArray, pack_error, plain_attributes

log = logging.getLogger(__name__)

_ATTACHED_THREADS = 16

CHUNK_WINDOW = 4
"""Synthesized chunks a worker may send ahead of the parent's reader (then it waits for "more")."""
PROGRESS_EVERY = 1.0
"""At most one "progress" message a second per call (an engine's checkpoint() between segments)."""


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

    calls: dict[int, _Call] = {}
    blocks = MappedBlocks()
    engines: dict[str, Any] = {context.slug: engine}
    # Threads start on demand; the parent's pool bounds each model's concurrency, and attached engines
    # (shared weights) bring their own share of calls, so this is a ceiling, not a reservation.
    workers = max(max_concurrency, _ATTACHED_THREADS)
    pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix=f"engine-{context.slug}")
    while True:
        try:
            message = conn.recv()
        except (EOFError, OSError):
            # The parent is gone: nobody will read an answer, and the memory must go back now.
            os._exit(0)
        kind = message[0]
        if kind == "call" and message[2] == "batch_stats":
            # answered here, never queued behind the engine calls it describes (/metrics scrapes it)
            _, rid, _, _, slug = message
            snapshot_of = getattr(engines.get(slug), "batch_snapshot", None)  # None: batching is off
            replies.send(("result", rid, (snapshot_of() if callable(snapshot_of) else None, False)))
        elif kind == "call":
            _, rid, method, payload, slug = message
            calls[rid] = call = _Call(rid, replies)
            pool.submit(_run_call, engines, slug, call, method, payload, calls, blocks)
        elif kind in ("cancel", "more"):
            found = calls.get(message[1])
            if found is not None:
                found.cancel() if kind == "cancel" else found.more()
        elif kind == "forget":
            blocks.forget(message[1])
        elif kind == "exit":
            break
    # Calls still running stop at their next step; engines are unloaded only once none is inside them.
    for call in list(calls.values()):
        call.cancel()
    pool.shutdown(wait=True, cancel_futures=True)
    code = 0
    for slug, each in list(engines.items()):
        try:
            each.unload()
        except Exception:
            log.exception("unloading %s failed", slug)
            code = 1
    blocks.close()
    _exit_now(code)


def _exit_now(code: int) -> NoReturn:
    """Exit without the interpreter's teardown.

    The engine has let go of its files and devices and the shared blocks are unmapped; collecting torch,
    spaCy, ... module by module takes seconds and gives back nothing that the exit does not. Only the
    logs need flushing.
    """
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


class _Call:
    """One request in the worker: its cancel flag and progress (a `CallControl` the engine sees as
    `current_call()`), and its credits: chunks it may still send before the parent asks for more."""

    def __init__(self, rid: int, replies: _Replies) -> None:
        self.rid = rid
        self.replies = replies
        self.control = CallControl()
        self.control.on_progress = self._progress
        self._credits = CHUNK_WINDOW
        self._changed = threading.Condition()
        self._last_progress_sent = 0.0

    def _progress(self) -> None:
        now = time.monotonic()
        if now - self._last_progress_sent >= PROGRESS_EVERY:
            self._last_progress_sent = now
            self.replies.send(("progress", self.rid))

    def cancel(self) -> None:
        self.control.cancel()
        with self._changed:
            self._changed.notify_all()

    def more(self) -> None:
        with self._changed:
            self._credits += 1
            self._changed.notify_all()

    def take_credit(self) -> bool:
        """Wait until one more chunk may be sent (the parent's reader keeps up); False once cancelled."""
        with self._changed:
            while self._credits <= 0 and not self.control.cancelled:
                self._changed.wait()
            if self.control.cancelled:
                return False
            self._credits -= 1
            return True


def _run_call(
    engines: dict[str, Any],
    slug: str,
    call: _Call,
    method: str,
    payload: Any,
    calls: dict[int, _Call],
    blocks: MappedBlocks,
) -> None:
    replies, rid = call.replies, call.rid
    token = bind_call(call.control)
    try:
        if method == "attach":
            _attach(engines, replies, rid, payload)
            return
        engine = engines.get(slug)
        if engine is None:
            raise LookupError(f"model {slug!r} is not loaded in this worker")
        if method == "detach":
            del engines[slug]
            engine.unload()
            replies.send(("result", rid, (None, False)))
        elif method in ("transcribe", "diarize"):  # both take a request whose `audio` may be shared memory
            _transcribe(getattr(engine, method), replies, rid, payload, blocks)
        elif method == "transcribe_stream":
            _transcribe_stream(engine, call, payload, blocks)
        elif method == "synthesize":
            _synthesize(engine, call, payload)
        else:
            raise ValueError(f"unknown engine method {method!r}")
    except BaseException as exc:
        replies.send(("error", rid, pack_error(exc)))
    finally:
        unbind_call(token)
        calls.pop(rid, None)


def _attach(engines: dict[str, Any], replies: _Replies, rid: int, payload: tuple[str, Any, Any]) -> None:
    """Load one more engine here (it takes the weights of the one already loaded: see SharedWeights)."""
    target, spec, context = payload
    engine = resolve_target(target)(spec, context)
    engine.load()
    engines[context.slug] = engine
    replies.send(("result", rid, (plain_attributes(engine), False)))


def _transcribe(
    run: Callable[[Any], Any],
    replies: _Replies,
    rid: int,
    payload: tuple[TranscriptionRequest, Any],
    blocks: MappedBlocks,
) -> None:
    request, audio = payload
    if not isinstance(audio, SharedArray):
        replies.send(("result", rid, (run(request_with(request, audio)), False)))
        return
    ref = audio
    audio, one_off = blocks.view(ref)
    try:
        outcome: tuple[Any, ...] = ("result", rid, run(request_with(request, audio)))
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


def _transcribe_stream(
    engine: Any, call: _Call, payload: tuple[TranscriptionRequest, Any], blocks: MappedBlocks
) -> None:
    """Each segment as a "chunk" as soon as the engine yields it (within the chunk window), then the whole
    result. An engine without `transcribe_stream` sends its segments when `transcribe` returns. A
    cancelled call stops at the next segment and ends with "end"."""
    request, audio = payload
    ref = audio if isinstance(audio, SharedArray) else None
    one_off = None
    if ref is not None:
        audio, one_off = blocks.view(ref)
    outcome: tuple[Any, ...]
    try:
        outcome = _stream_segments(engine, call, request_with(request, audio))
    except BaseException as exc:
        outcome = ("error", call.rid, pack_error(exc))
    retained = False
    if ref is not None:
        retained = sys.getrefcount(audio) > 2  # as in _transcribe: did the engine keep a view?
        del audio
        blocks.done(ref, one_off, retained=retained)
    if outcome[0] == "result":
        outcome = ("result", call.rid, (outcome[2], retained))
    call.replies.send(outcome)


def _stream_segments(engine: Any, call: _Call, request: TranscriptionRequest) -> tuple[Any, ...]:
    method = getattr(engine, "transcribe_stream", None)
    if method is None:
        result = engine.transcribe(request)
        for segment in result.segments:
            if not call.take_credit():
                return ("end", call.rid)
            call.replies.send(("chunk", call.rid, segment))
        return ("result", call.rid, result)
    stream = method(request)
    try:
        while True:
            try:
                segment = next(stream)
            except StopIteration as stop:
                return ("result", call.rid, stop.value)
            if not call.take_credit():
                return ("end", call.rid)
            call.replies.send(("chunk", call.rid, segment))
    finally:
        stream.close()


def request_with(request: TranscriptionRequest, audio: Any) -> TranscriptionRequest:
    return dataclasses.replace(request, audio=audio)


def _synthesize(engine: Any, call: _Call, request: SpeechRequest) -> None:
    """Chunks as the engine yields them, each only when the parent has room for it (backpressure: a slow
    reader slows the engine down). A cancelled call stops between chunks and still ends with "end"."""
    chunks = engine.synthesize(request)
    try:
        for chunk in chunks:
            if not call.take_credit():
                break
            call.replies.send(("chunk", call.rid, chunk))
    finally:
        close = getattr(chunks, "close", None)
        if close is not None:
            close()
    call.replies.send(("end", call.rid))
