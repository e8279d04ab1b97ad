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

from talkies.engines.host_ipc import RemoteError, unpack_error
from talkies.errors import LoadTimeoutError, ModelLoadError, WorkerCrashedError

log = logging.getLogger(__name__)

UNLOAD_GRACE = 5.0
"""Seconds a worker gets to exit after "exit", then again after SIGTERM, before SIGKILL."""

live_workers: set[WorkerLink] = set()  # workers to stop if the server exits without unloading them


class WorkerLink:
    """One worker process and the parent's side of its pipe."""

    def __init__(self, process: BaseProcess, conn: Connection, slug: str) -> None:
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
                raise ModelLoadError(f"model {self.slug!r}: the engine worker died while loading ({how})")
        try:
            message = self.conn.recv()
        except (EOFError, OSError):
            self.process.join()
            how = self._exit()
            self.close()
            raise ModelLoadError(
                f"model {self.slug!r}: the engine worker died while loading ({how})"
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

    def open(self, method: str, payload: Any) -> tuple[int, queue.SimpleQueue[tuple[Any, ...]]]:
        inbox: queue.SimpleQueue[tuple[Any, ...]] = queue.SimpleQueue()
        with self._lock:
            if self._death is not None:
                raise self.crashed()
            rid = next(self._ids)
            self._pending[rid] = inbox
        try:
            with self._send_lock:
                self.conn.send(("call", rid, method, payload))
        except (OSError, ValueError):
            self.close_request(rid)
            raise self.crashed() from None
        return rid, inbox

    def close_request(self, rid: int, *, cancel: bool = False) -> None:
        with self._lock:
            found = self._pending.pop(rid, None) is not None
        if cancel and found:
            try:
                with self._send_lock:
                    self.conn.send(("cancel", rid))
            except (OSError, ValueError):
                pass

    def next_reply(self, inbox: queue.SimpleQueue[tuple[Any, ...]], deadline: float, timeout: float) -> Any:
        """The next reply for a request: its value, a chunk, or None at the end of a stream."""
        try:
            message = inbox.get(timeout=max(0.0, deadline - time.monotonic()))
        except queue.Empty:
            self.kill(f"a request timed out after {timeout:g}s (TALKIES_ENGINE_TIMEOUT)")
            raise WorkerCrashedError(
                f"model {self.slug!r}: the engine did not answer within {timeout:g}s "
                "(TALKIES_ENGINE_TIMEOUT); the request timed out, its worker was killed and the model "
                "reloads on the next request"
            ) from None
        kind = message[0]
        if kind in ("result", "chunk"):
            return message[2]
        if kind == "end":
            return None
        if kind == "error":
            remote: RemoteError = message[2]
            raise unpack_error(remote, self.slug, loading=False)
        raise self.crashed()

    def crashed(self) -> WorkerCrashedError:
        return WorkerCrashedError(
            f"model {self.slug!r}: {self._death or 'its worker is not running'}; "
            "the model will reload on the next request"
        )

    # --- stop ----------------------------------------------------------------------------------------

    def kill(self, reason: str) -> None:
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
            log.warning("model %s: worker %s did not exit in %gs; terminating", self.slug, self.pid, grace)
            self.process.terminate()
            self.process.join(grace)
        if self.process.is_alive():
            log.warning("model %s: worker %s ignored SIGTERM; killing", self.slug, self.pid)
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
