"""Every HTTP request runs in an admission scope of the pool (talkies.pool.admission): the queue places it
takes when admitted are kept until its response is sent, and returned however it ends."""

from __future__ import annotations

from starlette.types import ASGIApp, Receive, Scope, Send

from talkies.pool import ModelPool


class AdmissionScope:
    def __init__(self, app: ASGIApp, *, pool: ModelPool) -> None:
        self.app = app
        self.pool = pool

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        with self.pool.admission_scope():
            await self.app(scope, receive, send)
