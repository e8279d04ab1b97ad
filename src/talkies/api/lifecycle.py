"""Readiness and graceful shutdown.

`Lifecycle` is one app's state: started (the lifespan finished its start-up, preloads included), draining
(a SIGTERM arrived), and how many requests are in flight. `DrainGate` counts those requests and, once
draining, answers every new one 503 `shutting_down` with `Retry-After` and `Connection: close`, while the
probes (/healthz, /readyz, /metrics) keep answering. `GracefulServer` is uvicorn's server with the signal
handling that drives it:

    SIGTERM / SIGINT -> readiness false, new requests 503, the listening socket stays open
                     -> in-flight requests get up to TALKIES_SHUTDOWN_GRACE to finish (checked every tick)
                     -> uvicorn's own shutdown (connections closed, anything left cancelled after 1 s)
                     -> lifespan shutdown: workers and external servers stopped and reaped
    a second signal  -> stop now (in-flight requests cancelled), workers still reaped

The socket stays open while draining on purpose: a load balancer that has not yet seen /readyz go 503 still
sends requests, and a 503 with Retry-After tells its client to go elsewhere, where a refused connection
would look like a crash.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from types import FrameType

import uvicorn
from starlette.types import ASGIApp, Receive, Scope, Send

from talkies.api.errors import error_response
from talkies.errors import ShuttingDownError

log = logging.getLogger(__name__)

PROBE_PATHS = frozenset({"/healthz", "/readyz", "/metrics"})
"""Answered while draining, and not counted as work in flight."""
LISTENER_PATHS = frozenset({"/v1/mcp"})
"""A GET here is an MCP client's standing event stream: open for as long as the client is, not work that a
drain should wait for (its POSTs, the tool calls, are)."""
RETRY_AFTER = 5


@dataclass
class Lifecycle:
    started: bool = False
    draining: bool = False
    in_flight: int = 0

    def not_ready_reason(self) -> str | None:
        """Why /readyz answers 503 (None: ready)."""
        if self.draining:
            return "draining"
        if not self.started:
            return "starting"
        return None

    def begin_drain(self) -> None:
        self.draining = True


def _counted(scope: Scope) -> bool:
    path = scope["path"]
    if path in PROBE_PATHS:
        return False
    return not (scope["method"] in ("GET", "HEAD") and path in LISTENER_PATHS)


class DrainGate:
    """Count HTTP requests in flight; refuse new ones (503 `shutting_down`) once the server drains."""

    def __init__(self, app: ASGIApp, lifecycle: Lifecycle) -> None:
        self.app = app
        self.lifecycle = lifecycle

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        kind = scope["type"]
        if kind not in ("http", "websocket") or scope["path"] in PROBE_PATHS:
            await self.app(scope, receive, send)
            return
        if self.lifecycle.draining:
            if kind == "websocket":
                await send({"type": "websocket.close", "code": 1012, "reason": "server shutting down"})
                return
            await self._refuse(scope, receive, send)
            return
        counted = kind == "http" and _counted(scope)
        if counted:
            self.lifecycle.in_flight += 1
        try:
            await self.app(scope, receive, send)
        finally:
            if counted:
                self.lifecycle.in_flight -= 1

    async def _refuse(self, scope: Scope, receive: Receive, send: Send) -> None:
        response = error_response(
            ShuttingDownError(
                "the server is shutting down and takes no new requests; retry on another instance "
                "or after it restarts",
                retry_after=RETRY_AFTER,
            )
        )
        response.headers["Connection"] = "close"
        await response(scope, receive, send)


class GracefulServer(uvicorn.Server):
    """uvicorn.Server whose first SIGTERM / SIGINT drains (see the module docstring) instead of closing the
    listening socket at once."""

    def __init__(self, config: uvicorn.Config, lifecycle: Lifecycle, grace: float) -> None:
        super().__init__(config)
        self.lifecycle = lifecycle
        self.grace = grace
        self._deadline: float | None = None
        self._announced = False

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        # A signal handler: only plain assignments here; on_tick (the event loop) does the rest.
        if self.lifecycle.draining or self.grace <= 0 or not self.started:
            self.config.timeout_graceful_shutdown = 1  # a second signal: cancel what still runs
            super().handle_exit(sig, frame)
            return
        self._captured_signals.append(sig)  # uvicorn re-raises it after shutdown, as for its own exit
        self._deadline = time.monotonic() + self.grace
        self.lifecycle.begin_drain()

    async def on_tick(self, counter: int) -> bool:
        if self.lifecycle.draining and self._deadline is not None and not self.should_exit:
            in_flight = self.lifecycle.in_flight
            if not self._announced:
                self._announced = True
                log.info(
                    "shutting down: /readyz answers 503, new requests 503; %d request(s) in flight get up "
                    "to %gs (TALKIES_SHUTDOWN_GRACE)",
                    in_flight,
                    self.grace,
                )
            if in_flight == 0:
                log.info("drained: no request in flight")
                self._stop_after_drain()
            elif time.monotonic() >= self._deadline:
                log.warning(
                    "TALKIES_SHUTDOWN_GRACE (%gs) is over with %d request(s) in flight; they are cancelled",
                    self.grace,
                    in_flight,
                )
                self._stop_after_drain()
        return await super().on_tick(counter)

    def _stop_after_drain(self) -> None:
        # The drain already waited; what uvicorn's own shutdown still finds (an MCP event stream, a request
        # past the grace) gets a second, then it is cancelled and the lifespan stops the workers.
        self.config.timeout_graceful_shutdown = 1
        self.should_exit = True
