"""Requests for `process` models: through the pool (queue, concurrency, load on demand) to the model's
server, streamed both ways.

`open()` pins the model (starting its server if needed), sends the request with the body as an async
iterator (nothing is buffered here), and returns the response head plus an iterator over its raw body;
the model stays pinned until that iterator is closed. A transport failure becomes `UpstreamCrashedError`
when the server has exited (the pool then marks the model unloaded and the next request starts it again)
or `UpstreamError` when it is still running; both answer 502.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, AsyncIterable, AsyncIterator, Sequence
from dataclasses import dataclass
from typing import cast

import anyio.to_thread
import httpx

from talkies.engines.base import Modality, UpstreamServer
from talkies.errors import EngineError, UpstreamCrashedError, UpstreamError
from talkies.pool import ModelPool
from talkies.registry import ModelSpec, Registry
from talkies.settings import Settings

CONNECT_TIMEOUT = 10.0
EXIT_GRACE = 0.5
"""How long a failed exchange waits to see whether the server is exiting (crash) or alive (error)."""


@dataclass(frozen=True, slots=True)
class UpstreamHead:
    status: int
    headers: list[tuple[bytes, bytes]]


class ProxyService:
    def __init__(self, pool: ModelPool, registry: Registry, settings: Settings) -> None:
        self.pool = pool
        self.registry = registry
        self.settings = settings
        # No read/write timeout: a long transcription or a slow stream is the server's business; the
        # pool's queue and the client's own timeout bound a request.
        self.client = httpx.AsyncClient(
            timeout=httpx.Timeout(None, connect=CONNECT_TIMEOUT),
            trust_env=False,
            follow_redirects=False,
            limits=httpx.Limits(max_connections=None, max_keepalive_connections=64),
        )

    def process_spec(self, name: str | None, kind: Modality | None = None) -> ModelSpec | None:
        """The registry entry `name` (slug or alias) names, if it is a `process` model. An empty name
        with `kind` given is that modality's default model, as on the built-in endpoints."""
        if name is None:
            return None
        spec = self.registry.default(kind) if not name.strip() and kind else self.registry.get(name)
        return spec if spec is not None and spec.executor == "process" else None

    async def open(
        self,
        spec: ModelSpec,
        method: str,
        path: str,
        *,
        query: Sequence[tuple[str, str]] = (),
        headers: Sequence[tuple[bytes, bytes]] = (),
        body: bytes | AsyncIterable[bytes] | None = None,
    ) -> tuple[UpstreamHead, AsyncIterator[bytes]]:
        exchange = self._exchange(spec, method, path, list(query), list(headers), body)
        try:
            head = await anext(exchange)
        except BaseException:
            await exchange.aclose()
            raise
        assert isinstance(head, UpstreamHead)
        return head, cast(AsyncIterator[bytes], exchange)

    async def _exchange(
        self,
        spec: ModelSpec,
        method: str,
        path: str,
        query: list[tuple[str, str]],
        headers: list[tuple[bytes, bytes]],
        body: bytes | AsyncIterable[bytes] | None,
    ) -> AsyncGenerator[UpstreamHead | bytes, None]:
        async with self.pool.acquire(spec.slug) as engine:
            server = cast(UpstreamServer, engine)
            if not isinstance(engine, UpstreamServer):
                raise EngineError(f"model {spec.slug!r}: its engine is not an external server")
            request = self.client.build_request(
                method,
                server.base_url + path,
                params=httpx.QueryParams(tuple(query)) if query else None,
                headers=headers,
                content=body,
            )
            try:
                response = await self.client.send(request, stream=True)
            except httpx.HTTPError as exc:
                raise await self._failure(spec, server, exc) from None
            try:
                yield UpstreamHead(response.status_code, list(response.headers.raw))
                async for chunk in response.aiter_raw():
                    yield chunk
            except httpx.HTTPError as exc:
                raise await self._failure(spec, server, exc) from None
            finally:
                await response.aclose()

    async def _failure(self, spec: ModelSpec, server: UpstreamServer, exc: httpx.HTTPError) -> EngineError:
        what = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
        if await anyio.to_thread.run_sync(server.exited_within, EXIT_GRACE):
            return UpstreamCrashedError(
                f"model {spec.slug!r}: its server exited during the request ({what}); "
                "the next request starts it again"
            )
        return UpstreamError(
            f"model {spec.slug!r}: the exchange with its server at {server.base_url} failed: {what}"
        )

    async def aclose(self) -> None:
        await self.client.aclose()
