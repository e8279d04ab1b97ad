"""The one seam between the services and the engines: where a service gets an engine for a slug.

On the single-process server that is the `ModelPool` (`async with pool.acquire(slug) as engine`). On Ray
Serve (`talkies.ray`) it is a provider whose engines are proxies that call the model-server deployments
through a Ray handle. Nothing here imports Ray; the services depend on these Protocols only.
"""

from __future__ import annotations

from contextlib import AbstractAsyncContextManager
from typing import TYPE_CHECKING, Any, Protocol

from talkies.engines.base import Engine

if TYPE_CHECKING:
    from talkies.metrics_remote import Family


class EngineProvider(Protocol):
    """Gives a service an engine for one request: the model stays loaded (and its concurrency slot held)
    until the context exits. `ModelPool` satisfies this as it is."""

    def acquire(self, slug: str) -> AbstractAsyncContextManager[Engine]: ...


class RemoteModels(EngineProvider, Protocol):
    """An `EngineProvider` whose models live in other processes (Ray Serve's model-server replicas): the
    resource endpoints (`/readyz`, `/api/ps`, `POST /api/ps/{id}`) ask it instead of the local pool."""

    async def not_ready_reason(self) -> str | None:
        """None when every model-server deployment is healthy, else why not (for /readyz)."""

    async def ps(self) -> list[dict[str, Any]]:
        """One row per model resident on a model-server replica, naming the replica and its node."""

    metric_labels: dict[str, str]
    """Labels of the ingress's own pool samples in GET /metrics (its deployment and replica)."""

    async def metric_families(self) -> list[Family]:
        """Every model-server replica's pool metrics, each sample labelled with its deployment and replica,
        merged into GET /metrics (talkies.metrics_remote)."""

    async def preload(self, slugs: tuple[str, ...]) -> None:
        """Load each of `slugs` on a replica now (routed as its requests will be), as `ModelPool.preload`
        does locally."""
