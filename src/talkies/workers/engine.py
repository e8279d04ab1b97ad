"""The engine host: each loaded model lives in its own worker process.

PyTorch, CTranslate2 and a CUDA context do not reliably give memory back to the operating system while
their process lives; a process that exits does. So with `TALKIES_ENGINE_ISOLATION=process`, `load()`
starts a worker that builds and loads the real engine, and `unload()` ends it. `ProcessEngine` is the
proxy the pool holds: it has the same Transcriber / Synthesizer surface as the engine it stands for, so
services and the pool do not know the difference.

- Start method: *spawn*. The worker is a fresh interpreter: it inherits no CUDA context (a forked CUDA
  context is unusable), no locks held by the server's other threads at the moment of fork (fork with
  threads can deadlock the child), and none of the server's heap, so its memory is the engine's alone.
  forkserver would start faster but is POSIX-only and keeps a server process of its own; the extra
  ~0.5 s of spawn is small next to loading weights.
- Audio in: decoded PCM goes through shared memory (one copy into the block, none out); see host_ipc.
  Audio out: each synthesized chunk comes back as soon as the worker produces it, so streaming works.
- Concurrency: requests are multiplexed by request id over one pipe. A reader thread routes replies to
  per-request queues; the worker runs up to `max_concurrency` calls at once, as the in-process engine would.
- Faults: a worker that dies -> WorkerCrashedError naming the model, for every request in flight (the pool
  then marks the model unloaded and the next request reloads it). A call that makes no progress (no chunk,
  no result, no "progress" from an engine checkpoint) for TALKIES_ENGINE_TIMEOUT -> the worker is killed
  and the call raises EngineTimeoutError (504). A long synthesis that keeps producing never times out.
- Cancellation and backpressure: a request's CallControl cancel (client hung up) sends "cancel"; the
  worker stops at the engine's next step and still ends the call, and the proxy waits for that end. A
  worker sends at most a few chunks ahead of what the parent consumed, so a slow reader slows the engine.
  Load errors are re-raised with their type and message (see host_ipc.unpack_error).
"""

from __future__ import annotations

import dataclasses
import logging
import multiprocessing
import threading
from collections.abc import Callable, Generator, Hashable, Iterator
from typing import Any, cast

import numpy as np

from talkies.engines.base import (
    AudioChunk,
    EngineContext,
    Segment,
    SpeechRequest,
    TranscriptionRequest,
    TranscriptionResult,
    Voice,
    current_call,
)
from talkies.errors import EngineTimeoutError, WorkerCrashedError
from talkies.registry import ModelSpec
from talkies.workers import worker as host_worker
from talkies.workers.ipc import INLINE_ARRAY_BYTES
from talkies.workers.link import UNLOAD_GRACE, WorkerLink, live_workers, process_rss

log = logging.getLogger(__name__)

_NO_AUDIO = np.zeros(0, dtype=np.float32)
_STATS_TIMEOUT = 2.0  # seconds a /metrics scrape waits for a worker's batch totals

CATALOG_METHODS = frozenset({"voices", "check_voice"})
"""Methods that must work without weights (see the Synthesizer Protocol): answered in the parent by an
instance of the real engine class that is constructed but never loaded, without a round trip."""


@dataclasses.dataclass
class _SharedWorker:
    """A worker that holds the engines of several slugs sharing one model's weights."""

    link: WorkerLink
    users: set[str] = dataclasses.field(default_factory=set)


_SHARED_WORKERS: dict[Hashable, _SharedWorker] = {}
_SHARED_LOCK = threading.Lock()


def start_helpers() -> None:
    """Start multiprocessing's resource tracker now rather than with the first worker.

    It is one small process for the server's lifetime that every worker shares; it unlinks shared-memory
    blocks that a crash left behind. Started at start-up, it belongs to the idle server's footprint, so
    memory after an unload is compared with a baseline that already includes it.
    """
    from multiprocessing import resource_tracker

    resource_tracker.ensure_running()


class ProcessEngine:
    """Proxy for an engine that runs in a worker process of its own.

    `ProcessEngine(spec, context, target="module:Class", ...)` returns a ProcessTranscriber, a
    ProcessSynthesizer or a ProcessDuplex according to the methods the real engine class has, so that
    `isinstance(engine, Transcriber)` answers as it would for the real engine: the proxy forwards only
    what the real engine has. Its plain data attributes (e.g. `can_translate`) are read from the loaded
    engine in the worker, or, before load, from an instance of the real class constructed (never loaded)
    here; the catalog methods (`voices()`, and `check_voice()` where the engine has one) are answered by
    that instance, since they must work without weights. Other methods are not forwarded.
    """

    isolation = "process"

    def __new__(cls, spec: ModelSpec, context: EngineContext, *, target: str, **_: Any) -> ProcessEngine:
        if cls is ProcessEngine:
            real = host_worker.resolve_target(target)
            asr, tts = hasattr(real, "transcribe"), hasattr(real, "synthesize")
            cls = ProcessDuplex if asr and tts else ProcessTranscriber if asr else ProcessSynthesizer
            if hasattr(real, "diarize"):
                from talkies.workers.diarizer import ProcessDiarizer

                cls = ProcessDiarizer
        return object.__new__(cls)

    def __init__(
        self,
        spec: ModelSpec,
        context: EngineContext,
        *,
        target: str,
        call_timeout: float = 600.0,
        load_timeout: float = 300.0,
        grace: float = UNLOAD_GRACE,
    ) -> None:
        self.spec = spec
        self.context = context
        self.target = target
        self.call_timeout = call_timeout
        self.load_timeout = load_timeout
        self.grace = grace
        self._worker: WorkerLink | None = None
        self._attributes: dict[str, Any] = {}
        self._shared_key: Hashable | None = None
        self._local: Any = None
        self._lifecycle = threading.Lock()

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.context.slug} {self.target} pid={self.worker_pid}>"

    # --- lifecycle -----------------------------------------------------------------------------------

    def load(self) -> None:
        """Start the worker and load the engine there. Errors keep their in-process type and message.

        An engine whose weights another loaded slug already holds (`weights_key()`, see
        talkies.engines.common) is attached to that slug's worker instead: one process, one copy."""
        with self._lifecycle:
            if self._worker is not None:
                if self._worker.alive:
                    return
                self._worker.close()
                self._worker = None
            key = self._weights_key()
            if key is None:
                self._worker = self._spawn()
                return
            with _SHARED_LOCK:
                shared = _SHARED_WORKERS.get(key)
                if shared is not None and shared.link.alive:
                    self._attach(shared)
                else:
                    shared = _SharedWorker(self._spawn())
                    _SHARED_WORKERS[key] = shared
                shared.users.add(self.context.slug)
                self._worker = shared.link
                self._shared_key = key

    def _weights_key(self) -> Hashable | None:
        method = getattr(self._local_engine(), "weights_key", None)
        return method() if callable(method) else None

    def _attach(self, shared: _SharedWorker) -> None:
        link = shared.link
        rid, inbox = link.open("attach", (self.target, self.spec, self.context), self.context.slug)
        try:
            attributes, _ = link.next_reply(inbox, self.load_timeout, self.context.slug, loading=True)
        finally:
            link.close_request(rid)
        self._attributes = attributes
        log.info(
            "%s: loaded into the worker (pid %s) of %s",
            self.context.slug,
            link.pid,
            ", ".join(sorted(shared.users)),
        )

    def _spawn(self) -> WorkerLink:
        ctx = multiprocessing.get_context("spawn")
        parent_end, child_end = ctx.Pipe(duplex=True)
        process = ctx.Process(
            target=host_worker.serve,
            args=(
                child_end,
                self.target,
                self.spec,
                self.context,
                self.spec.max_concurrency,
                logging.getLogger().getEffectiveLevel(),
            ),
            name=f"talkies-engine:{self.context.slug}",
        )
        process.start()
        child_end.close()  # so that the worker's death reads as end-of-file here
        worker = WorkerLink(process, parent_end, self.context.slug, self.spec.max_concurrency)
        live_workers.add(worker)
        worker.wait_ready(self.load_timeout)
        self._attributes = worker.attributes
        return worker

    def unload(self) -> None:
        """End the worker: its memory goes back to the operating system. Idempotent.

        A worker that other slugs still use (shared weights) only unloads this slug's engine."""
        with self._lifecycle:
            worker, self._worker = self._worker, None
            key, self._shared_key = self._shared_key, None
            if worker is None:
                return
            if key is not None:
                with _SHARED_LOCK:
                    shared = _SHARED_WORKERS.get(key)
                    if shared is not None and shared.link is worker:
                        shared.users.discard(self.context.slug)
                        if shared.users and worker.alive:
                            self._detach(worker)
                            return
                        del _SHARED_WORKERS[key]
        worker.stop(self.grace)

    def _detach(self, worker: WorkerLink) -> None:
        try:
            rid, inbox = worker.open("detach", None, self.context.slug)
            try:
                worker.next_reply(inbox, self.call_timeout, self.context.slug)
            finally:
                worker.close_request(rid)
        except WorkerCrashedError:
            log.warning("%s: its shared worker was gone when it unloaded", self.context.slug)

    @property
    def alive(self) -> bool:
        """False once its worker is gone: crashed, or killed, also for another slug's engine timeout when
        slugs share the worker. The pool then drops the model instead of failing its next request."""
        worker = self._worker
        return worker is not None and worker.alive

    def kill(self, reason: str) -> None:
        """Kill the worker now, calls inside it or not (shutdown, after the pool's bounded wait)."""
        worker = self._worker
        if worker is not None:
            worker.kill(reason)

    @property
    def worker_pid(self) -> int | None:
        worker = self._worker
        return worker.pid if worker is not None and worker.alive else None

    def worker_rss(self) -> int | None:
        """Resident memory of the worker in bytes (None when it is not running)."""
        pid = self.worker_pid
        return None if pid is None else process_rss(pid)

    def batch_snapshot(self) -> tuple[dict[int, int], float, int] | None:
        """The cross-request batcher's totals in the worker (engines/batching.py `BatchStats.snapshot`);
        None when the worker is not running or its engine does not batch."""
        worker = self._worker
        if worker is None or not worker.alive:
            return None
        rid, inbox = worker.open("batch_stats", None, self.context.slug)
        try:
            snapshot, _ = worker.next_reply(inbox, _STATS_TIMEOUT, self.context.slug)
        finally:
            worker.close_request(rid)
        return cast("tuple[dict[int, int], float, int] | None", snapshot)

    # --- forwarding ----------------------------------------------------------------------------------

    def _running(self) -> WorkerLink:
        worker = self._worker
        if worker is None:
            raise WorkerCrashedError(f"model {self.context.slug!r} is not loaded (its worker is not running)")
        if not worker.alive:
            raise worker.crashed()
        return worker

    def _call_with_audio(self, op: str, request: Any) -> Any:
        """One call whose request carries `audio` (transcribe, diarize): the audio inline, or through a
        shared block when large; a cancelled call is forwarded to the worker; the reply is the result."""
        worker = self._running()
        audio = np.ascontiguousarray(request.audio)
        shared = worker.blocks.put(audio) if audio.nbytes > INLINE_ARRAY_BYTES else None
        retained = True  # unless the worker says the engine let go of the audio, its block is retired
        try:
            payload = (dataclasses.replace(request, audio=_NO_AUDIO), shared[0] if shared else audio)
            rid, inbox = worker.open(op, payload, self.context.slug)
            stop_forwarding = _forward_cancel(worker, rid)
            try:
                result, retained = worker.next_reply(inbox, self.call_timeout, self.context.slug)
                return result
            finally:
                stop_forwarding()
                worker.close_request(rid)
        finally:
            if shared is not None:
                worker.blocks.give_back(*shared, retained=retained)

    def _local_engine(self) -> Any:
        if self._local is None:
            self._local = host_worker.resolve_target(self.target)(self.spec, self.context)
        return self._local

    def _attribute(self, name: str) -> Any:
        if self._worker is not None and name in self._attributes:
            return self._attributes[name]
        value = getattr(self._local_engine(), name)
        if callable(value):
            raise AttributeError(f"{name!r}: only data attributes of an isolated engine are forwarded")
        return value

    def __getattr__(self, name: str) -> Any:
        if name.startswith("_"):
            raise AttributeError(name)
        if name in CATALOG_METHODS:
            return getattr(self._local_engine(), name)
        return self._attribute(name)


class ProcessTranscriber(ProcessEngine):
    @property
    def can_translate(self) -> bool:
        return bool(self._attribute("can_translate"))

    @property
    def batches_regions(self) -> bool:
        return bool(self._attribute("batches_regions"))

    def transcribe(self, request: TranscriptionRequest) -> TranscriptionResult:
        return cast("TranscriptionResult", self._call_with_audio("transcribe", request))

    @property
    def request_options(self) -> frozenset[str]:
        value = getattr(self._local_engine(), "request_options", None)
        return frozenset(value) if value is not None else frozenset({"prompt", "temperature"})

    def transcribe_stream(
        self, request: TranscriptionRequest
    ) -> Generator[Segment, None, TranscriptionResult]:
        """Segments as the worker's engine yields them, then its result (see engines.base.SegmentStreamer),
        at the pace they are consumed. Closing the generator early cancels the transcription there and
        waits until it stopped."""
        worker = self._running()
        slug = self.context.slug
        audio = np.ascontiguousarray(request.audio)
        shared = worker.blocks.put(audio) if audio.nbytes > INLINE_ARRAY_BYTES else None
        retained = True  # an abandoned call may still read its block: retired unless the worker says not
        try:
            payload = (dataclasses.replace(request, audio=_NO_AUDIO), shared[0] if shared else audio)
            rid, inbox = worker.open("transcribe_stream", payload, slug)
            stop_forwarding = _forward_cancel(worker, rid)
            finished = False
            try:
                while True:
                    try:
                        reply = worker.next_reply(inbox, self.call_timeout, slug)
                    except BaseException:
                        finished = True
                        raise
                    if isinstance(reply, Segment):
                        worker.more(rid)
                        yield reply
                        continue
                    finished = True
                    result: TranscriptionResult
                    result, retained = reply
                    return result
            finally:
                stop_forwarding()
                if not finished:
                    _finish_abandoned_stream(worker, rid, inbox, self.call_timeout, slug)
                worker.close_request(rid)
        finally:
            if shared is not None:
                worker.blocks.give_back(*shared, retained=retained)


def _finish_abandoned_stream(worker: WorkerLink, rid: int, inbox: Any, timeout: float, slug: str) -> None:
    """Cancel a transcription stream the caller stopped reading; wait for its "end" (or its result or
    error, when it finished meanwhile), so the model's slot is free only once the engine really is."""
    worker.cancel(rid)
    while True:
        try:
            reply = worker.next_reply(inbox, timeout, slug)
        except EngineTimeoutError:
            raise
        except Exception:
            return
        if not isinstance(reply, Segment):
            return
        worker.more(rid)


class ProcessSynthesizer(ProcessEngine):
    def voices(self) -> list[Voice]:
        voices: list[Voice] = self._local_engine().voices()
        return voices

    def synthesize(self, request: SpeechRequest) -> Iterator[AudioChunk]:
        """Chunks as the worker produces them, at the pace they are consumed (the worker holds back past a
        small window). Closing the iterator early cancels the synthesis there and waits until it stopped."""
        worker = self._running()
        slug = self.context.slug
        rid, inbox = worker.open("synthesize", request, slug)
        stop_forwarding = _forward_cancel(worker, rid)
        finished = False
        try:
            while True:
                try:
                    chunk: AudioChunk | None = worker.next_reply(inbox, self.call_timeout, slug)
                except BaseException:
                    finished = True  # the call already ended in the worker (error, crash or timeout)
                    raise
                if chunk is None:
                    finished = True
                    return
                worker.more(rid)
                yield chunk
        finally:
            stop_forwarding()
            if not finished:
                worker.finish_abandoned(rid, inbox, self.call_timeout, slug)
            worker.close_request(rid)


def _forward_cancel(worker: WorkerLink, rid: int) -> Callable[[], None]:
    """While call `rid` runs, a cancel of the request's CallControl (client hung up) reaches the worker."""
    control = current_call()
    if control is None:
        return lambda: None
    return control.when_cancelled(lambda: worker.cancel(rid))


class ProcessDuplex(ProcessTranscriber, ProcessSynthesizer):
    pass
