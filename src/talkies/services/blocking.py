"""Blocking native work (engines, encoders, decoders) driven from async code without ever closing a native
object while a thread is still inside it.

The rule: a worker thread that runs a step of native work (an engine call, `SpeechEncoder.feed`, a PyAV
decode) owns the objects it touches until that step returns. Cancelling the request (a client that hung
up, a timeout) must not free them under it: PyAV / libav, ONNX Runtime and friends dereference freed
memory and take the whole server down (issue 20). So:

- `BlockingSteps.run(fn, ...)` runs one step in a worker thread. If the awaiting task is cancelled, the
  call's `CallControl` is cancelled (engines stop at their next `checkpoint()`, a worker process gets a
  cancel message) and the task *waits for the step to return* before the cancellation goes on. Whatever
  is cleaned up after that (`finally`, exit stacks, the pool's release of the model) runs after the
  thread has let go.
- `BlockingSteps.close(...)` runs the clean-up itself (closing a generator, an encoder) in a worker
  thread, to the end, whatever cancellation arrives meanwhile.
- `BlockingSteps.iterate(iterator)` is the streaming form: `next()` one item per step, and the iterator
  closed (in a thread, after the last step) however the consumer stops.

Every streaming path uses these: speech in every format, MCP `speak`, staged speech, transcription; a new
one (server-sent events, WebSocket) should too.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from typing import Any, TypeVar

import anyio
import anyio.to_thread

from talkies.engines.base import CallControl, bind_call, unbind_call

log = logging.getLogger(__name__)

T = TypeVar("T")
_DONE = object()


async def finish_before_cancel(work: Awaitable[T], on_cancel: Callable[[], None] | None = None) -> T:
    """Await `work` (run as a task of its own); if the caller is cancelled first, call `on_cancel`, let the
    work run to its end, then let the cancellation through. `work` itself is never cancelled."""
    task = asyncio.ensure_future(work)
    try:
        return await asyncio.shield(task)
    except asyncio.CancelledError:
        if on_cancel is not None:
            on_cancel()
        # Shielded from anyio's repeated cancel delivery; a plain task.cancel() still lands on the
        # wait below and is absorbed until the work is done.
        with anyio.CancelScope(shield=True):
            while not task.done():
                try:
                    await asyncio.wait({task})
                except asyncio.CancelledError:
                    continue
        if not task.cancelled() and task.exception() is not None:
            log.debug("work abandoned by its request failed: %r", task.exception())
        raise


class BlockingSteps:
    """Steps of blocking work for one request, run one at a time in worker threads (see the module doc).

    `control` is the request's `CallControl`: engine calls made in a step see it as `current_call()`."""

    def __init__(self, control: CallControl | None = None) -> None:
        self.control = control or CallControl()
        self._running = False

    async def run(self, fn: Callable[..., T], *args: Any) -> T:
        if self._running:
            raise RuntimeError("BlockingSteps runs one step at a time")
        self._running = True
        try:
            return await finish_before_cancel(
                anyio.to_thread.run_sync(self._call, fn, args), on_cancel=self.control.cancel
            )
        finally:
            self._running = False

    def _call(self, fn: Callable[..., T], args: tuple[Any, ...]) -> T:
        token = bind_call(self.control)
        try:
            return fn(*args)
        finally:
            unbind_call(token)

    async def close(self, *closers: Callable[[], object] | None) -> None:
        """Run `closers` in order in a worker thread, each to its end; failures are logged, not raised."""
        todo = [c for c in closers if c is not None]
        if todo:
            await finish_before_cancel(anyio.to_thread.run_sync(_close_all, todo))

    async def iterate(self, iterator: Iterator[T]) -> AsyncIterator[T]:
        """Items of a blocking iterator, one `next()` per step; the iterator is closed at the end."""
        try:
            while True:
                item = await self.run(next, iterator, _DONE)
                if item is _DONE:
                    return
                yield item
        finally:
            await self.close(getattr(iterator, "close", None))


def _close_all(closers: list[Callable[[], object]]) -> None:
    for close in closers:
        try:
            close()
        except Exception:
            log.exception("clean-up after a request failed")
