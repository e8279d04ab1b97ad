"""The model-server deployment: the engines of one resource class (CPU or GPU), multiplexed by slug.

Each replica runs the single-process server's own `ModelPool` (loads bounded by TALKIES_LOAD_TIMEOUT, a
model never unloaded while a request uses it, `max_concurrency` per model, the memory budget) with room
for `max_models` models. Ray Serve's `@serve.multiplexed` decides which models a replica holds, so that
the router sends a model's requests to the replicas that already hold it: its loader loads the model
into the pool, and when it evicts its least recently used model (`_Resident.__del__`), the pool unloads
it once the requests using it have finished.

Calls arrive through a `DeploymentHandle` with `multiplexed_model_id=<slug>`: `transcribe` answers a
`TranscriptionResult` and `diarize` a `DiarizationResult`; `transcribe_stream` and `synthesize` are
streaming methods (segments then a `StreamEnd`; `AudioChunk`s). A transcription's and a diarization's
audio come through Ray's object store (`AudioCall`, `DiarizationCall`). `metric_families` answers the
pool's metrics for the ingress's GET /metrics.
Engine calls run in worker threads, one step at a time (`BlockingSteps`), as on the single-process
server; a stream the caller drops is closed after the step in flight.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from collections import Counter
from collections.abc import AsyncGenerator, Callable, Iterator
from dataclasses import dataclass, replace
from typing import Any, cast

import numpy as np

import ray
from ray import serve
from talkies.engines import make_engine_factory
from talkies.engines.base import (
    AudioChunk,
    Engine,
    EngineContext,
    Segment,
    SpeechRequest,
    Synthesizer,
    Transcriber,
    TranscriptionRequest,
    TranscriptionResult,
)
from talkies.engines.diarization.protocol import DiarizationRequest, DiarizationResult, Diarizer
from talkies.errors import ModelNotLoadedError
from talkies.logs import configure_logging
from talkies.metrics import Metrics
from talkies.metrics_remote import Family, pool_families
from talkies.pool import ModelPool
from talkies.registry import ModelSpec
from talkies.services.blocking import BlockingSteps
from talkies.settings import Settings

log = logging.getLogger("talkies.ray")
EngineFactory = Callable[[ModelSpec, EngineContext], Engine]
NO_AUDIO = np.zeros(0, dtype=np.float32)


@dataclass(frozen=True, slots=True)
class AudioCall:
    """A transcription request whose audio travels through Ray's object store: the ref sits inside this
    object, so Serve passes it on unresolved and the replica fetches the array itself."""

    request: TranscriptionRequest  # its `audio` is empty
    audio: ray.ObjectRef[Any]

    async def resolve(self) -> TranscriptionRequest:
        audio = await self.audio
        return replace(self.request, audio=audio)


@dataclass(frozen=True, slots=True)
class DiarizationCall:
    """A diarization request whose whole-file audio and known-speaker samples travel through Ray's object
    store, as `AudioCall`'s audio does."""

    request: DiarizationRequest  # its `audio` is empty and its `references` ()
    audio: ray.ObjectRef[Any]
    references: tuple[ray.ObjectRef[Any], ...]

    async def resolve(self) -> DiarizationRequest:
        audio = await self.audio
        references = tuple([await reference for reference in self.references])
        return replace(self.request, audio=audio, references=references)


@dataclass(frozen=True, slots=True)
class StreamEnd:
    """The last item of a `transcribe_stream`: the whole result."""

    result: TranscriptionResult


class _Resident:
    """What the multiplexer holds for one model. Ray calls `__del__` in an executor thread when it evicts
    the least recently used model: the pool unloads it after its requests in flight. Python calls it
    again at garbage collection; only the first call does anything."""

    def __init__(self, slug: str, pool: ModelPool, loop: asyncio.AbstractEventLoop) -> None:
        self.slug = slug
        self._pool = pool
        self._loop = loop
        self._gone = False

    def __del__(self) -> None:
        if self._gone:
            return
        self._gone = True
        with contextlib.suppress(RuntimeError):
            if asyncio.get_running_loop() is self._loop:
                return  # collected on the loop itself (replica shutdown): the pool's close unloads it
        if self._loop.is_closed():
            return
        log.info("model server: evicting %s (least recently used)", self.slug)
        future = asyncio.run_coroutine_threadsafe(self._unload(), self._loop)
        future.result()

    async def _unload(self) -> None:
        with contextlib.suppress(ModelNotLoadedError):
            await self._pool.unload(self.slug)


class ModelServer:
    """One model-server replica. Built by `talkies.ray.app.build_app` with `serve.deployment(...)`."""

    def __init__(
        self,
        settings: Settings,
        device: str,
        max_models: int,
        engine_factory: EngineFactory | None = None,
    ) -> None:
        from talkies.api.app import build_registry

        configure_logging(settings.log_level)
        settings = settings.model_copy(update={"max_loaded_models": max_models})
        registry = build_registry(settings, device)
        make = engine_factory or make_engine_factory(settings)
        self.loads: Counter[str] = Counter()  # engines loaded in this replica, per slug

        def counting(spec: ModelSpec, context: EngineContext) -> Engine:
            self.loads[spec.slug] += 1
            return make(spec, context)

        self.pool = ModelPool(registry, settings, device=device, engine_factory=counting)
        self.metrics = Metrics(self.pool)  # the pool's events; merged into the ingress's GET /metrics
        self.pool.events = self.metrics
        context = serve.get_replica_context()
        self.replica = context.replica_id.unique_id
        self.actor = context.replica_id.to_full_id_str()  # the replica's actor name (namespace "serve")
        self.deployment = context.deployment
        self.node = ray.get_runtime_context().get_node_id()

        async def resident(slug: str) -> _Resident:
            await self.pool.preload((slug,))
            return _Resident(slug, self.pool, asyncio.get_running_loop())

        # Per instance, so that max_num_models_per_replica comes from the settings (Serve detects a
        # multiplexed function stored on the instance).
        self.model = serve.multiplexed(max_num_models_per_replica=max_models)(resident)

    async def _slug(self) -> str:
        slug = serve.get_multiplexed_model_id()
        await self.model(slug)  # loads it here (evicting the least recently used) unless resident
        return slug

    async def transcribe(self, call: AudioCall) -> TranscriptionResult:
        slug = await self._slug()
        request = await call.resolve()
        async with self.pool.acquire(slug) as engine:
            return await BlockingSteps().run(cast(Transcriber, engine).transcribe, request)

    async def transcribe_stream(self, call: AudioCall) -> AsyncGenerator[Segment | StreamEnd, None]:
        slug = await self._slug()
        request = await call.resolve()
        async with self.pool.acquire(slug) as engine:
            steps = BlockingSteps()
            segments = engine.transcribe_stream(request)  # type: ignore[attr-defined]
            try:
                while True:
                    item = await steps.run(_next_segment, segments)
                    yield item
                    if isinstance(item, StreamEnd):
                        return
            finally:
                await steps.close(segments.close)

    async def synthesize(self, request: SpeechRequest) -> AsyncGenerator[AudioChunk, None]:
        slug = await self._slug()
        async with self.pool.acquire(slug) as engine:
            chunks: Iterator[AudioChunk] = iter(cast(Synthesizer, engine).synthesize(request))
            async for chunk in BlockingSteps().iterate(chunks):
                yield chunk

    async def diarize(self, call: DiarizationCall) -> DiarizationResult:
        slug = await self._slug()
        request = await call.resolve()
        async with self.pool.acquire(slug) as engine:
            return await BlockingSteps().run(cast(Diarizer, engine).diarize, request)

    async def load(self) -> None:
        """`POST /api/ps/{id}` on Ray: load the model this call is routed for."""
        await self._slug()

    def state(self) -> dict[str, Any]:
        """What this replica holds (broadcast by the ingress for /api/ps): its pool's rows, each naming the
        replica, its node and how many times the model was loaded here."""
        rows = []
        for row in self.pool.ps():
            rows.append(
                {
                    **row,
                    "deployment": self.deployment,
                    "replica": self.replica,
                    "node": self.node,
                    "pid": row.get("pid", os.getpid()),
                    "loads": self.loads[row["model"]],
                }
            )
        return {
            "replica": self.replica,
            "actor": self.actor,
            "deployment": self.deployment,
            "node": self.node,
            "pid": os.getpid(),
            "models": rows,
            "loads": dict(self.loads),
        }

    def metric_families(self) -> list[Family]:
        """This replica's pool metrics, labelled with its deployment and replica (broadcast by the ingress
        for GET /metrics)."""
        return pool_families(self.metrics.registry, {"deployment": self.deployment, "replica": self.replica})

    async def __del__(self) -> None:
        await self.pool.close()


def _next_segment(segments: Any) -> Segment | StreamEnd:
    try:
        return cast(Segment, next(segments))
    except StopIteration as stop:
        return StreamEnd(cast(TranscriptionResult, stop.value))
