"""Cancel a request's work when its client goes away (after the body has been read), and close a streamed
body however its response ends."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable
from typing import TypeVar

import anyio
from fastapi import Request
from fastapi.responses import StreamingResponse
from starlette.types import Receive, Scope, Send

from talkies.errors import ClientDisconnectedError

T = TypeVar("T")


async def cancel_on_disconnect(request: Request, work: Awaitable[T]) -> T:
    """Await `work`; if an `http.disconnect` arrives first, cancel it and raise ClientDisconnectedError.

    Call only once the request body has been consumed: from then on the ASGI receive channel carries
    nothing but the disconnect, so a queued request leaves the model's queue as soon as its client does.
    The work is cancelled through an anyio cancel scope, not `Task.cancel()`: its shielded clean-up (a
    partial download removed, a model's pin released) then finishes before the request ends.
    """
    scope = anyio.CancelScope()

    async def run() -> T:
        with scope:
            return await work
        raise ClientDisconnectedError("client disconnected; the request was cancelled")

    task = asyncio.ensure_future(run())

    async def watch() -> None:
        while True:
            message = await request.receive()
            if message["type"] == "http.disconnect":
                return

    watcher = asyncio.ensure_future(watch())
    try:
        done, _ = await asyncio.wait({task, watcher}, return_when=asyncio.FIRST_COMPLETED)
        if task in done:
            return task.result()
        scope.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await task
        raise ClientDisconnectedError("client disconnected; the request was cancelled")
    finally:
        watcher.cancel()
        if not task.done():
            task.cancel()


class ClosingStreamingResponse(StreamingResponse):
    """A StreamingResponse that closes its body iterator however the response ends.

    When the client hangs up mid-body, Starlette cancels the sending task and leaves the iterator
    suspended; its clean-up (closing the engine's generator and the encoder, releasing the model) would
    then wait for the garbage collector. Here it runs at once, shielded from the cancellation."""

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            aclose = getattr(self.body_iterator, "aclose", None)
            if aclose is not None:
                with anyio.CancelScope(shield=True):
                    await aclose()
