"""One external server process: started in its own process group, its output logged, stopped for sure.

- The child gets a session (and so a process group) of its own: a stop signal reaches everything it
  started, and a Ctrl-C meant for talkies does not hit it first.
- stdout and stderr are merged and read by a thread that logs each line as `<model>| <line>` and keeps
  the last lines for error messages (a load that fails says why in the child's own words).
- A second thread waits for the child, so it is always reaped, and reports an exit nobody asked for.
- A watchdog (a tiny Python process of its own, no talkies import) holds the read end of a pipe whose
  write end only talkies holds. However talkies ends (SIGKILL included), the kernel closes that end;
  the watchdog then sends SIGTERM to the child's process group and SIGKILL after the grace period. No
  orphans, without PR_SET_PDEATHSIG (which fires when the *thread* that forked exits, and talkies starts
  children from short-lived worker threads).
- `stop()`: the watchdog is dismissed first (so it can never signal a reused process group), then
  `cmdStop` runs (or SIGTERM goes to the group), then SIGKILL after the grace period. Once the child has
  exited, and before it is reaped, its group is swept with SIGKILL so nothing it started outlives it.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import subprocess
import sys
import threading
import time
from collections import deque
from collections.abc import Callable

log = logging.getLogger("talkies.process")

TAIL_LINES = 40

WATCHDOG = r"""
import os, signal, sys, time
pgid, grace = int(sys.argv[1]), float(sys.argv[2])
try:
    while os.read(0, 4096):
        pass
except OSError:
    pass
def alive():
    try:
        os.killpg(pgid, 0)
        return True
    except OSError:
        return False
if alive():
    try:
        os.killpg(pgid, signal.SIGTERM)
    except OSError:
        pass
    deadline = time.monotonic() + grace
    while alive() and time.monotonic() < deadline:
        time.sleep(0.05)
    try:
        os.killpg(pgid, signal.SIGKILL)
    except OSError:
        pass
"""


class Child:
    """A started server process. `on_exit(code)` is called (from a thread) when it exits unasked."""

    def __init__(
        self,
        name: str,
        argv: list[str],
        env: dict[str, str],
        *,
        grace: float,
        on_exit: Callable[[int], None] | None = None,
    ) -> None:
        self.name = name
        self.argv = argv
        self.grace = grace
        self.on_exit = on_exit
        self.tail: deque[str] = deque(maxlen=TAIL_LINES)
        self._stopping = False
        self._exited = threading.Event()
        self._lock = threading.Lock()
        try:
            self.popen = subprocess.Popen(
                argv,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                env=env,
                start_new_session=True,
            )
        except OSError as exc:
            raise ChildStartError(f"cannot start {argv[0]!r}: {exc.strerror or exc}") from None
        self.pid = self.popen.pid
        self._watchdog = self._start_watchdog()
        self._reader = threading.Thread(target=self._pump, name=f"talkies-log-{name}", daemon=True)
        self._reader.start()
        self._waiter = threading.Thread(target=self._wait, name=f"talkies-wait-{name}", daemon=True)
        self._waiter.start()
        log.info("%s: started %s (pid %d)", name, " ".join(argv), self.pid)

    def _start_watchdog(self) -> subprocess.Popen[bytes] | None:
        read_end, write_end = os.pipe()
        try:
            watchdog = subprocess.Popen(
                [sys.executable, "-I", "-S", "-c", WATCHDOG, str(self.pid), str(self.grace)],
                stdin=read_end,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
                start_new_session=True,
            )
        except OSError:
            log.exception("%s: the watchdog did not start; the child may outlive a killed talkies", self.name)
            os.close(write_end)
            return None
        finally:
            os.close(read_end)
        self._watch_fd = write_end  # non-inheritable: only this process holds it
        return watchdog

    def _pump(self) -> None:
        stream = self.popen.stdout
        assert stream is not None
        for raw in iter(stream.readline, b""):
            line = raw.decode("utf-8", "replace").rstrip()
            self.tail.append(line)
            log.info("%s| %s", self.name, line)
        stream.close()

    def _wait(self) -> None:
        with contextlib.suppress(OSError):  # exited, not yet reaped: its group id cannot be reused yet
            os.waitid(os.P_PID, self.pid, os.WEXITED | os.WNOWAIT)
        self._dismiss_watchdog()
        self._sweep_group()
        code = self.popen.wait()
        self._exited.set()
        if not self._stopping:
            log.error("%s: the server exited unexpectedly (code %s)", self.name, code)
            if self.on_exit is not None:
                self.on_exit(code)

    # --- state ---------------------------------------------------------------------------------------

    @property
    def alive(self) -> bool:
        return not self._exited.is_set()

    @property
    def returncode(self) -> int | None:
        return self.popen.returncode

    def wait_exit(self, timeout: float) -> bool:
        """True when the child has exited (within `timeout` seconds)."""
        return self._exited.wait(timeout)

    def last_output(self, lines: int = 15) -> str:
        self._reader.join(0.2)  # let the last lines of a dead child arrive
        kept = list(self.tail)[-lines:]
        return "\n".join(kept) if kept else "(no output)"

    # --- stopping ------------------------------------------------------------------------------------

    def stop(self, stop_argv: list[str] | None = None, env: dict[str, str] | None = None) -> None:
        """Stop the child and everything in its process group; returns once it is reaped."""
        self._stopping = True
        self._dismiss_watchdog()
        if self.alive:
            if stop_argv:
                self._run_stop_command(stop_argv, env)
            else:
                self._signal(signal.SIGTERM)
            if not self._exited.wait(self.grace):
                log.warning(
                    "%s: still running %.3gs after the stop request; killing it", self.name, self.grace
                )
                self._signal(signal.SIGKILL)
                self._exited.wait(10.0)
        self._waiter.join(10.0)
        self._reader.join(2.0)
        log.info("%s: stopped (code %s)", self.name, self.popen.returncode)

    def _run_stop_command(self, argv: list[str], env: dict[str, str] | None) -> None:
        log.info("%s: running cmdStop: %s", self.name, " ".join(argv))
        try:
            done = subprocess.run(
                argv,
                stdin=subprocess.DEVNULL,
                capture_output=True,
                env=env,
                timeout=max(self.grace, 1.0),
                check=False,
            )
        except (OSError, subprocess.TimeoutExpired) as exc:
            log.warning("%s: cmdStop failed (%s); sending SIGTERM", self.name, exc)
            self._signal(signal.SIGTERM)
            return
        if done.returncode != 0:
            output = (done.stdout + done.stderr).decode("utf-8", "replace").strip()
            log.warning("%s: cmdStop exited %d: %s; sending SIGTERM", self.name, done.returncode, output)
            self._signal(signal.SIGTERM)

    def _signal(self, sig: signal.Signals) -> None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.pid, sig)

    def _sweep_group(self) -> None:
        """SIGKILL whatever is left in the child's group (it exited, but what it started may not have).
        Called while the leader is a zombie, so the group id cannot belong to anyone else."""
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.pid, signal.SIGKILL)

    def _dismiss_watchdog(self) -> None:
        with self._lock:
            watchdog, self._watchdog = self._watchdog, None
        if watchdog is None:
            return
        with contextlib.suppress(ProcessLookupError):
            watchdog.kill()
        watchdog.wait()
        with contextlib.suppress(OSError):
            os.close(self._watch_fd)


class ChildStartError(Exception):
    """The command could not be executed at all (not found, not executable)."""


def wait_until(predicate: Callable[[], bool], timeout: float, interval: float) -> bool:
    deadline = time.monotonic() + timeout
    while True:
        if predicate():
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(interval)
