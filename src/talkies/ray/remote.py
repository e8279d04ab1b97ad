"""The ingress side of the seam: `RayModels` gives the services engines that run on the model servers.

`acquire(slug)` yields a proxy engine instead of a loaded one; its methods are called by the services in
worker threads, exactly as a local engine's are, and each becomes a call through the model-server
deployment's `DeploymentHandle` with `multiplexed_model_id=slug` (so Ray routes it to a replica that
holds the model): `transcribe` and `diarize` wait for their result, `transcribe_stream` and
`synthesize` iterate a streaming response. A client that goes away cancels the Ray call at the next
step. Data attributes the services read without a call (`batches_regions`, `can_translate`, ...) come
from a local instance of the engine class, constructed and never loaded.

Errors: a domain error the model server raised is raised again as itself (same status as on the
single-process server), any other failure there is an `EngineError`; a replica that died under the call
is a `WorkerCrashedError` (500, retry). Speech goes over Serve's gRPC transport (`_by_reference=False`:
no audio goes in, so nothing needs the object store), where a replica's exception arrives unwrapped; the
other calls pass their audio as an object ref, by reference, where it arrives as a `RayTaskError`.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Iterator
from dataclasses import replace
from typing import Any, TypeVar, cast

import anyio.to_thread
from ray.exceptions import RayActorError, RayError, RayTaskError
from ray.serve.handle import DeploymentHandle, DeploymentResponse, DeploymentResponseGenerator

import ray
from ray import serve
from talkies.api.app import build_registry
from talkies.engines import create_engine
from talkies.engines.base import (
    AudioChunk,
    Engine,
    EngineContext,
    Segment,
    SpeechRequest,
    TranscriptionRequest,
    TranscriptionResult,
    checkpoint,
)
from talkies.engines.diarization.protocol import DiarizationRequest, DiarizationResult
from talkies.errors import (
    EngineError,
    EngineUnavailableError,
    ServiceUnavailableError,
    TalkiesError,
    WorkerCrashedError,
)
from talkies.metrics_remote import Family
from talkies.ray.model_server import NO_AUDIO, AudioCall, DiarizationCall, StreamEnd
from talkies.ray.placement import resource_class
from talkies.registry import ModelSpec
from talkies.settings import Settings

T = TypeVar("T")
POLL_SECONDS = 0.25  # how often a call waiting for its result looks whether its client went away
STATE_TIMEOUT = 30.0  # bound on a /api/ps or /readyz round to the replicas


def _raise_domain(exc: RayError, slug: str) -> None:
    if isinstance(exc, RayTaskError):
        cause = exc.cause
        if isinstance(cause, TalkiesError):
            raise cause from None
        raise EngineError(f"model {slug!r} failed on its model server: {cause!r}") from None
    if isinstance(exc, RayActorError):
        raise WorkerCrashedError(
            f"model {slug!r}: the model-server replica serving this request died; retry the request"
        ) from None
    raise ServiceUnavailableError(f"model {slug!r}: Ray Serve could not serve the request: {exc}") from None


def _wait(response: DeploymentResponse[T], slug: str) -> T:
    """The call's result; polls so that a client that hung up cancels it (`checkpoint` raises)."""
    try:
        while True:
            try:
                return response.result(timeout_s=POLL_SECONDS)
            except TimeoutError:
                checkpoint()
    except RayError as exc:
        _raise_domain(exc, slug)
        raise
    except BaseException:
        response.cancel()  # type: ignore[no-untyped-call]
        raise


def _items(responses: DeploymentResponseGenerator[T], slug: str) -> Iterator[T]:
    try:
        while True:
            try:
                item = next(responses)
            except StopIteration:
                return
            except RayError as exc:
                _raise_domain(exc, slug)
                raise
            except TalkiesError:
                raise
            except Exception as exc:  # over Serve's gRPC transport the replica's own exception comes as is
                raise EngineError(f"model {slug!r} failed on its model server: {exc!r}") from None
            yield item
            checkpoint()
    finally:
        responses.cancel()  # type: ignore[no-untyped-call]  # no-op once finished; stops the replica's generator when abandoned


class RemoteEngine:
    """A model on the model servers, as an engine. Only data attributes forward to the local instance."""

    def __init__(self, local: Engine, handle: DeploymentHandle[Any], slug: str) -> None:
        self._local = local
        self._slug = slug
        self._call = handle.options(multiplexed_model_id=slug)
        self._stream = handle.options(multiplexed_model_id=slug, stream=True)
        # Speech carries no audio in, so its call may skip Ray's object store both ways: over Serve's
        # gRPC transport to the replica, each chunk comes back in the stream itself (bench/ray_overhead.py).
        self._direct = handle.options(multiplexed_model_id=slug, stream=True, _by_reference=False)

    def __getattr__(self, name: str) -> Any:
        value = getattr(self._local, name)
        if callable(value):
            raise AttributeError(name)  # methods run remotely or not at all
        return value


class RemoteTranscriber(RemoteEngine):
    def transcribe(self, request: TranscriptionRequest) -> TranscriptionResult:
        response = cast(
            DeploymentResponse[TranscriptionResult], self._call.transcribe.remote(_audio_call(request))
        )
        return _wait(response, self._slug)


class RemoteSegmentStreamer(RemoteTranscriber):
    def transcribe_stream(self, request: TranscriptionRequest) -> Iterator[Segment]:
        responses = cast(
            DeploymentResponseGenerator[Segment | StreamEnd],
            self._stream.transcribe_stream.remote(_audio_call(request)),
        )
        for item in _items(responses, self._slug):
            if isinstance(item, StreamEnd):
                return item.result  # type: ignore[return-value]  # the generator's return value
            yield item
        raise EngineError(f"model {self._slug!r}: its model server ended the stream without a result")


class RemoteSynthesizer(RemoteEngine):
    def synthesize(self, request: SpeechRequest) -> Iterator[AudioChunk]:
        responses = cast(DeploymentResponseGenerator[AudioChunk], self._direct.synthesize.remote(request))
        yield from _items(responses, self._slug)


class RemoteDiarizer(RemoteEngine):
    def diarize(self, request: DiarizationRequest) -> DiarizationResult:
        call = DiarizationCall(
            request=replace(request, audio=NO_AUDIO, references=()),
            audio=ray.put(request.audio),
            references=tuple(ray.put(reference) for reference in request.references),
        )
        response = cast(DeploymentResponse[DiarizationResult], self._call.diarize.remote(call))
        return _wait(response, self._slug)


def _audio_call(request: TranscriptionRequest) -> AudioCall:
    """The audio goes into Ray's object store (read by the replica from there), the rest by value."""
    return AudioCall(request=replace(request, audio=NO_AUDIO), audio=ray.put(request.audio))


class RayModels:
    """`RemoteModels` on Ray Serve: built in the ingress replica with a handle per resource class."""

    def __init__(
        self,
        settings: Settings,
        device: str,
        servers: dict[str, DeploymentHandle[Any]],
        labels: dict[str, str] | None = None,
    ) -> None:
        self.settings = settings
        self.metric_labels = labels or {}  # the ingress replica's, on its own pool's metrics
        self.device = device
        self.registry = build_registry(settings, device)
        self.servers = servers
        self._local: dict[str, Engine] = {}

    def _server(self, spec: ModelSpec) -> DeploymentHandle[Any]:
        handle = self.servers.get(resource_class(spec, self.device))
        if handle is None:
            raise EngineUnavailableError(f"model {spec.slug!r}: no model-server deployment serves it")
        return handle

    def engine(self, slug: str) -> RemoteEngine:
        spec = self.registry.get(slug)
        if spec is None:
            raise EngineUnavailableError(f"model {slug!r} is not in the Ray application's registry")
        local = self._local.get(spec.slug)
        if local is None:
            context = EngineContext(spec.slug, self.settings.models_dir / spec.slug, self.device)
            local = self._local[spec.slug] = create_engine(spec, context)
        kind: type[RemoteEngine]
        if spec.kind == "tts":
            kind = RemoteSynthesizer
        elif spec.kind == "diarization":
            kind = RemoteDiarizer
        elif callable(getattr(local, "transcribe_stream", None)):
            kind = RemoteSegmentStreamer
        else:
            kind = RemoteTranscriber
        return kind(local, self._server(spec), spec.slug)

    @contextlib.asynccontextmanager
    async def acquire(self, slug: str) -> AsyncIterator[Engine]:
        # Queueing, concurrency and residency are the model servers' (Serve's router and the replicas'
        # pools): nothing to pin here.
        yield cast(Engine, self.engine(slug))

    async def preload(self, slugs: tuple[str, ...]) -> None:
        for slug in slugs:
            spec = self.registry.get(slug)
            if spec is None:
                raise EngineUnavailableError(f"model {slug!r} is not in the Ray application's registry")
            call = self._server(spec).options(multiplexed_model_id=spec.slug).load.remote()
            response = cast(DeploymentResponse[None], call)
            await anyio.to_thread.run_sync(_wait, response, spec.slug)

    async def _broadcast(self, method: str) -> list[Any]:
        answers: list[Any] = []
        for handle in self.servers.values():
            response = handle.broadcast(method)
            answers += await response.results_async(timeout_s=STATE_TIMEOUT, return_exceptions=True)
        return answers

    async def metric_families(self) -> list[Family]:
        families: list[Family] = []
        for answer in await self._broadcast("metric_families"):
            if isinstance(answer, list):  # a replica that failed to answer is left out of this scrape
                families += answer
        return families

    async def ps(self) -> list[dict[str, Any]]:
        rows: list[dict[str, Any]] = []
        for answer in await self._broadcast("state"):
            if isinstance(answer, dict):
                rows += answer["models"]
        return rows

    async def not_ready_reason(self) -> str | None:
        status = await anyio.to_thread.run_sync(serve.status)
        names = {handle.deployment_name for handle in self.servers.values()}
        for app in status.applications.values():
            for name, deployment in app.deployments.items():
                if name in names and deployment.status != "HEALTHY":
                    return f"model-server deployment {name} is {deployment.status}: {deployment.message}"
        return None
