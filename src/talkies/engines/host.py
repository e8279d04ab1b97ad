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
  then marks the model unloaded and the next request reloads it). A call longer than TALKIES_ENGINE_TIMEOUT
  -> the worker is killed and the call raises WorkerCrashedError saying it timed out (an EngineError).
  Load errors are re-raised with their type and message (see host_ipc.unpack_error).
"""

from __future__ import annotations

import dataclasses
import logging
import multiprocessing
import threading
import time
from collections.abc import Iterator
from typing import Any

import numpy as np

from talkies.engines import host_worker
from talkies.engines.base import (
    AudioChunk,
    EngineContext,
    SpeechRequest,
    TranscriptionRequest,
    TranscriptionResult,
    Voice,
)
from talkies.engines.host_ipc import release, share_array
from talkies.engines.host_link import UNLOAD_GRACE, WorkerLink, live_workers, process_rss
from talkies.errors import WorkerCrashedError
from talkies.registry import ModelSpec

_NO_AUDIO = np.zeros(0, dtype=np.float32)


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
    here; `voices()` is answered the same way, since it must work without weights.
    """

    isolation = "process"

    def __new__(cls, spec: ModelSpec, context: EngineContext, *, target: str, **_: Any) -> ProcessEngine:
        if cls is ProcessEngine:
            real = host_worker.resolve_target(target)
            asr, tts = hasattr(real, "transcribe"), hasattr(real, "synthesize")
            cls = ProcessDuplex if asr and tts else ProcessTranscriber if asr else ProcessSynthesizer
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
        self._local: Any = None
        self._lifecycle = threading.Lock()

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.context.slug} {self.target} pid={self.worker_pid}>"

    # --- lifecycle -----------------------------------------------------------------------------------

    def load(self) -> None:
        """Start the worker and load the engine there. Errors keep their in-process type and message."""
        with self._lifecycle:
            if self._worker is not None:
                if self._worker.alive:
                    return
                self._worker.close()
                self._worker = None
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
            worker = WorkerLink(process, parent_end, self.context.slug)
            live_workers.add(worker)
            worker.wait_ready(self.load_timeout)
            self._worker = worker

    def unload(self) -> None:
        """End the worker: its memory goes back to the operating system. Idempotent."""
        with self._lifecycle:
            worker, self._worker = self._worker, None
        if worker is not None:
            worker.stop(self.grace)

    @property
    def worker_pid(self) -> int | None:
        worker = self._worker
        return worker.pid if worker is not None and worker.alive else None

    def worker_rss(self) -> int | None:
        """Resident memory of the worker in bytes (None when it is not running)."""
        pid = self.worker_pid
        return None if pid is None else process_rss(pid)

    # --- forwarding ----------------------------------------------------------------------------------

    def _running(self) -> WorkerLink:
        worker = self._worker
        if worker is None:
            raise WorkerCrashedError(f"model {self.context.slug!r} is not loaded (its worker is not running)")
        if not worker.alive:
            raise worker.crashed()
        return worker

    def _local_engine(self) -> Any:
        if self._local is None:
            self._local = host_worker.resolve_target(self.target)(self.spec, self.context)
        return self._local

    def _attribute(self, name: str) -> Any:
        worker = self._worker
        if worker is not None and name in worker.attributes:
            return worker.attributes[name]
        value = getattr(self._local_engine(), name)
        if callable(value):
            raise AttributeError(f"{name!r}: only data attributes of an isolated engine are forwarded")
        return value

    def __getattr__(self, name: str) -> Any:
        if name.startswith("_"):
            raise AttributeError(name)
        return self._attribute(name)


class ProcessTranscriber(ProcessEngine):
    @property
    def can_translate(self) -> bool:
        return bool(self._attribute("can_translate"))

    @property
    def batches_regions(self) -> bool:
        return bool(self._attribute("batches_regions"))

    def transcribe(self, request: TranscriptionRequest) -> TranscriptionResult:
        worker = self._running()
        deadline = time.monotonic() + self.call_timeout
        audio, block = share_array(np.ascontiguousarray(request.audio))
        try:
            rid, inbox = worker.open("transcribe", (dataclasses.replace(request, audio=_NO_AUDIO), audio))
            try:
                result: TranscriptionResult = worker.next_reply(inbox, deadline, self.call_timeout)
                return result
            finally:
                worker.close_request(rid)
        finally:
            release(block)


class ProcessSynthesizer(ProcessEngine):
    def voices(self) -> list[Voice]:
        voices: list[Voice] = self._local_engine().voices()
        return voices

    def synthesize(self, request: SpeechRequest) -> Iterator[AudioChunk]:
        """Chunks as the worker produces them. Closing the iterator early cancels the synthesis there."""
        worker = self._running()
        deadline = time.monotonic() + self.call_timeout
        rid, inbox = worker.open("synthesize", request)
        finished = False
        try:
            while True:
                try:
                    chunk: AudioChunk | None = worker.next_reply(inbox, deadline, self.call_timeout)
                except BaseException:
                    finished = True  # the call already ended in the worker (error, crash or timeout)
                    raise
                if chunk is None:
                    finished = True
                    return
                yield chunk
        finally:
            worker.close_request(rid, cancel=not finished)


class ProcessDuplex(ProcessTranscriber, ProcessSynthesizer):
    pass
