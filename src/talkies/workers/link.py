"""The parent's side of one engine worker: its process, its pipe, and the requests in flight.

A reader thread routes each reply to the queue of the request it answers (requests are multiplexed by id,
so concurrent calls share one pipe). When the pipe reports end-of-file the worker is gone: every request
in flight gets WorkerCrashedError naming the model and how the worker ended.
"""

from __future__ import annotations

import atexit
import itertools
import logging
import os
import queue
import signal
import threading
import time
from multiprocessing.connection import Connection, wait
from multiprocessing.process import BaseProcess
from typing import Any

from talkies.errors import EngineTimeoutError, LoadTimeoutError, ModelLoadError, WorkerCrashedError
from talkies.workers.ipc import BlockPool, RemoteError, unpack_error

log = logging.getLogger(__name__)

UNLOAD_GRACE = 5.0
"""Seconds a worker gets to exit after "exit", then again after SIGTERM, before SIGKILL."""

live_workers: set[WorkerLink] = set()  # workers to stop if the server exits without unloading them


class WorkerLink:
    """One worker process and the parent's side of its pipe."""

    def __init__(self, process: BaseProcess, conn: Connection, slug: str, concurrency: int = 1) -> None:
        self.process = process
        self.conn = conn
        self.slug = slug
        self.pid = process.pid
        self.attributes: dict[str, Any] = {}
        self._send_lock = threading.Lock()
        self._lock = threading.Lock()
        self._pending: dict[int, queue.SimpleQueue[tuple[Any, ...]]] = {}
        self._ids = itertools.count(1)
        self._death: str | None = None  # why the worker is gone, once it is
        self._reader: threading.Thread | None = None
        self._closed = False
        self._stopping = threading.Lock()  # one kill / stop at a time
        self.blocks = BlockPool(keep=max(2, concurrency), forget=self._forget)

    # --- start ---------------------------------------------------------------------------------------

    def wait_ready(self, timeout: float) -> None:
        """Wait for the worker's answer to load(): ready, a load error, death, or the load timeout."""
        deadline = time.monotonic() + timeout
        while not self.conn.poll(0):
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                self.kill(f"its load took longer than {timeout:g}s")
                raise LoadTimeoutError(f"model {self.slug!r}: load timed out after {timeout:g}s")
            ready = wait([self.conn, self.process.sentinel], remaining)
            if self.process.sentinel in ready and not self.conn.poll(0):
                self.process.join()
                how = self._exit()
                self.close()
                raise ModelLoadError(
                    f"model {self.slug!r}: the engine worker died while loading ({how}); "
                    "its traceback, if any, is in the server's log"
                )
        try:
            message = self.conn.recv()
        except (EOFError, OSError):
            self.process.join()
            how = self._exit()
            self.close()
            raise ModelLoadError(
                f"model {self.slug!r}: the engine worker died while loading ({how}); "
                "its traceback, if any, is in the server's log"
            ) from None
        if message[0] == "load_failed":
            self.process.join(UNLOAD_GRACE)
            if self.process.is_alive():
                self.process.kill()
                self.process.join()
            self.close()
            raise unpack_error(message[1], self.slug, loading=True)
        _, self.pid, self.attributes = message
        self._reader = threading.Thread(target=self._read, name=f"talkies-host-{self.slug}", daemon=True)
        self._reader.start()

    # --- replies -------------------------------------------------------------------------------------

    def _read(self) -> None:
        while True:
            try:
                message = self.conn.recv()
            except (EOFError, OSError):
                break
            with self._lock:
                inbox = self._pending.get(message[1])
            if inbox is not None:
                inbox.put(message)
        self.process.join(1.0)
        with self._lock:
            if self._death is None:
                self._death = f"its worker (pid {self.pid}) died: {self._exit()}"
            pending, self._pending = self._pending, {}
        for inbox in pending.values():
            inbox.put(("died",))

    def _exit(self) -> str:
        code = self.process.exitcode
        if code is None:
            return "still running"
        if code < 0:
            try:
                return f"killed by {signal.Signals(-code).name}"
            except ValueError:
                return f"killed by signal {-code}"
        return f"exit code {code}"

    # --- requests ------------------------------------------------------------------------------------

    def open(
        self, method: str, payload: Any, slug: str | None = None
    ) -> tuple[int, queue.SimpleQueue[tuple[Any, ...]]]:
        """Send a call to the engine of `slug` (default: the worker's first engine)."""
        inbox: queue.SimpleQueue[tuple[Any, ...]] = queue.SimpleQueue()
        with self._lock:
            if self._death is not None:
                raise self.crashed()
            rid = next(self._ids)
            self._pending[rid] = inbox
        try:
            with self._send_lock:
                self.conn.send(("call", rid, method, payload, slug or self.slug))
        except (OSError, ValueError):
            self.close_request(rid)
            raise self.crashed() from None
        return rid, inbox

    def _forget(self, name: str) -> None:
        try:
            with self._send_lock:
                self.conn.send(("forget", name))
        except (OSError, ValueError):
            pass

    def close_request(self, rid: int, *, cancel: bool = False) -> None:
        with self._lock:
            found = self._pending.pop(rid, None) is not None
        if cancel and found:
            self._send_quietly(("cancel", rid))

    def cancel(self, rid: int) -> None:
        """Ask the worker to stop call `rid` at its next step; it still answers "end" or "error"."""
        self._send_quietly(("cancel", rid))

    def more(self, rid: int) -> None:
        """The parent consumed a chunk of `rid`: the worker may send one more."""
        self._send_quietly(("more", rid))

    def _send_quietly(self, message: tuple[Any, ...]) -> None:
        try:
            with self._send_lock:
                self.conn.send(message)
        except (OSError, ValueError):
            pass  # the worker is gone; its requests learn it from the reader

    def next_reply(
        self,
        inbox: queue.SimpleQueue[tuple[Any, ...]],
        timeout: float,
        slug: str | None = None,
        *,
        loading: bool = False,
    ) -> Any:
        """The next reply for a request: its value, a chunk, or None at the end of a stream.

        `timeout` is time without progress: every "progress" message (the engine finished a segment)
        starts it again. Past it the worker is killed and the call raises EngineTimeoutError."""
        while True:
            try:
                message = inbox.get(timeout=timeout)
            except queue.Empty:
                self.kill(f"a request made no progress for {timeout:g}s (TALKIES_ENGINE_TIMEOUT)")
                raise EngineTimeoutError(
                    f"model {self.slug!r}: the engine made no progress for {timeout:g}s "
                    "(TALKIES_ENGINE_TIMEOUT); the request timed out, its worker was killed and the model "
                    "reloads on the next request"
                ) from None
            kind = message[0]
            if kind == "progress":
                continue
            if kind in ("result", "chunk"):
                return message[2]
            if kind == "end":
                return None
            if kind == "error":
                remote: RemoteError = message[2]
                raise unpack_error(remote, slug or self.slug, loading=loading)
            raise self.crashed()

    def finish_abandoned(
        self, rid: int, inbox: queue.SimpleQueue[tuple[Any, ...]], timeout: float, slug: str | None = None
    ) -> None:
        """Cancel a stream the caller stopped reading and wait until the worker has stopped it (its "end"
        or "error"), so the model's slot is free only once the engine really is."""
        self.cancel(rid)
        while True:
            try:
                if self.next_reply(inbox, timeout, slug) is None:
                    return
                self.more(rid)  # a chunk already on its way: let the worker reach its cancel check
            except EngineTimeoutError:
                raise
            except Exception:
                return  # the call ended with an error, or the worker died: either way it stopped

    def crashed(self) -> WorkerCrashedError:
        return WorkerCrashedError(
            f"model {self.slug!r}: {self._death or 'its worker is not running'}; "
            "the model will reload on the next request"
        )

    # --- stop ----------------------------------------------------------------------------------------

    def kill(self, reason: str) -> None:
        with self._stopping:
            with self._lock:
                if self._closed:
                    return
                if self._death is None:
                    self._death = f"its worker (pid {self.pid}) was killed because {reason}"
            self.process.kill()
            self.process.join()
            self.close()

    def stop(self, grace: float) -> None:
        """Ask the worker to exit (it unloads the engine), then SIGTERM, then SIGKILL. Always joins."""
        with self._stopping:
            with self._lock:
                if self._closed:
                    return
                if self._death is None:
                    self._death = f"its worker (pid {self.pid}) was stopped (the model was unloaded)"
            try:
                with self._send_lock:
                    self.conn.send(("exit",))
            except (OSError, ValueError):
                pass
            self.process.join(grace)
            if self.process.is_alive():
                log.warning("model %s: worker %s still up after %gs; SIGTERM", self.slug, self.pid, grace)
                self.process.terminate()
                self.process.join(grace)
            if self.process.is_alive():
                log.warning("model %s: worker %s still up after SIGTERM; SIGKILL", self.slug, self.pid)
                self.process.kill()
                self.process.join()
            self.close()

    def close(self) -> None:
        """Release the pipe, the reader thread and the process handle of a worker that has exited."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
        if self._reader is not None:
            self._reader.join()  # the worker has exited, so the reader has seen end-of-file
        self.conn.close()
        self.blocks.close()
        live_workers.discard(self)
        self.process.close()

    @property
    def alive(self) -> bool:
        return self._death is None and not self._closed


@atexit.register
def _stop_all_workers() -> None:
    for worker in list(live_workers):
        try:
            worker.stop(1.0)
        except Exception:
            log.exception("stopping the worker of %s at exit failed", worker.slug)


def process_rss(pid: int) -> int | None:
    """Resident set size of `pid` in bytes: psutil when installed, else /proc/<pid>/statm."""
    try:
        import psutil
    except ImportError:
        try:
            with open(f"/proc/{pid}/statm") as statm:
                return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
        except (OSError, ValueError, IndexError):
            return None
    try:
        return int(psutil.Process(pid).memory_info().rss)
    except psutil.Error:
        return None
