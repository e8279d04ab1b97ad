"""The `process` executor: an external speech server (whisper.cpp's server, Kokoro-FastAPI, a container,
another talkies...) run as a managed child, the way llama-swap runs one.

`load()` picks the port for `${PORT}`, starts the command (`talkies.engines.process.child`) with an
allow-listed environment (`talkies.engines.process.environment`: never talkies' secrets) and polls
`checkEndpoint` on the `proxy` URL until it answers 200 (`none` skips the check): the load fails if
the child exits first or `healthCheckTimeout` passes, and the error carries the child's last output
lines. `unload()` runs `cmdStop` (with `${PID}`) or sends SIGTERM, then SIGKILL after `unloadTimeout`.
The engine holds no model: requests reach the child through `talkies.services.proxy`, which reads
`base_url` and `upstream_model` from it. A child that exits on its own is reported to whoever
registered with `set_exit_listener` (the pool marks the model unloaded).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

import httpx

from talkies.engines.base import EngineContext
from talkies.engines.process.child import Child, ChildStartError
from talkies.engines.process.command import expand_runtime, free_port, split_command, uses_port
from talkies.engines.process.environment import child_environment
from talkies.errors import ModelLoadError
from talkies.registry.schema import (
    DEFAULT_CHECK_ENDPOINT,
    DEFAULT_HEALTH_CHECK_TIMEOUT,
    DEFAULT_PROXY,
    DEFAULT_UNLOAD_TIMEOUT,
    ModelSpec,
)

log = logging.getLogger("talkies.process")

FIRST_CHECK_DELAY = 0.25
"""llama-swap waits this long after the start before the first health check."""
CHECK_INTERVAL = 0.25
CHECK_REQUEST_TIMEOUT = 5.0

_ports_lock = threading.Lock()
_ports_in_use: set[int] = set()
"""Ports handed to children that are running (they may not listen yet), so two loads never share one."""


class ExternalProcessEngine:
    """An engine whose model is someone else's server, started and stopped by talkies."""

    def __init__(self, spec: ModelSpec, context: EngineContext) -> None:
        self.spec = spec
        self.context = context
        self.child: Child | None = None
        self.port: int | None = None
        self.base_url = ""
        self._exit_listener: Callable[[int], None] | None = None
        self._start_port = context.options.get("start_port")
        passed = context.options.get("child_env", ())
        self._child_env: tuple[str, ...] = tuple(passed) if isinstance(passed, tuple | list) else ()
        self._env: dict[str, str] = {}

    # --- what the proxy reads ------------------------------------------------------------------------

    @property
    def upstream_model(self) -> str | None:
        """The `model` value the child expects instead of the client's (useModelName)."""
        return self.spec.use_model_name

    @property
    def alive(self) -> bool:
        return self.child is not None and self.child.alive

    def exited_within(self, seconds: float) -> bool:
        """True if the child has exited or does within `seconds` (a request just failed on it)."""
        return self.child is None or self.child.wait_exit(seconds)

    @property
    def worker_pid(self) -> int | None:
        """The child's pid, for /api/ps (with its memory)."""
        return self.child.pid if self.child is not None and self.child.alive else None

    def worker_rss(self) -> int | None:
        from talkies.workers.link import process_rss

        pid = self.worker_pid
        return None if pid is None else process_rss(pid)

    def set_exit_listener(self, listener: Callable[[int], None] | None) -> None:
        """`listener(exit_code)` is called from a thread when the child exits without being asked."""
        self._exit_listener = listener

    # --- lifecycle -----------------------------------------------------------------------------------

    def load(self) -> None:
        spec = self.spec
        assert spec.cmd is not None
        port = self._pick_port() if uses_port(spec.cmd) else None
        self.port = port
        argv = [expand_runtime(part, port=port) for part in split_command(spec.cmd)]
        self.base_url = expand_runtime(spec.proxy or DEFAULT_PROXY, port=port).rstrip("/")
        pairs = [expand_runtime(entry, port=port).partition("=") for entry in spec.env]
        env = child_environment([(key, value) for key, _, value in pairs], self._child_env)
        self._env = env
        grace = spec.unload_timeout if spec.unload_timeout is not None else DEFAULT_UNLOAD_TIMEOUT
        try:
            self.child = Child(spec.slug, argv, env, grace=grace, on_exit=self._exited)
        except ChildStartError as exc:
            self._release_port()
            raise ModelLoadError(f"model {spec.slug!r}: {exc}") from None
        try:
            self._wait_healthy(self.child)
        except BaseException:
            self.unload()
            raise

    def _pick_port(self) -> int:
        start = self._start_port if isinstance(self._start_port, int) else None
        with _ports_lock:
            port = free_port(start, frozenset(_ports_in_use))
            _ports_in_use.add(port)
        return port

    def _release_port(self) -> None:
        if self.port is not None:
            with _ports_lock:
                _ports_in_use.discard(self.port)

    def _wait_healthy(self, child: Child) -> None:
        spec = self.spec
        endpoint = (spec.check_endpoint or DEFAULT_CHECK_ENDPOINT).strip()
        if endpoint == "none":
            log.info("%s: checkEndpoint is none; ready without a health check", spec.slug)
            return
        endpoint = expand_runtime(endpoint, port=self.port)
        url = self.base_url + (endpoint if endpoint.startswith("/") else "/" + endpoint)
        limit = spec.health_check_timeout or DEFAULT_HEALTH_CHECK_TIMEOUT
        started = time.monotonic()
        last = "no answer yet"
        if child.wait_exit(FIRST_CHECK_DELAY):
            raise self._load_failed(child, f"the server exited (code {child.returncode}) while starting")
        with httpx.Client(timeout=CHECK_REQUEST_TIMEOUT, trust_env=False) as client:
            while True:
                try:
                    status = client.get(url).status_code
                    if status == 200:
                        log.info("%s: healthy at %s after %.2fs", spec.slug, url, time.monotonic() - started)
                        return
                    last = f"{url} answered {status}"
                except httpx.HTTPError as exc:
                    last = f"{url}: {type(exc).__name__}"
                if not child.alive:
                    raise self._load_failed(
                        child, f"the server exited (code {child.returncode}) while starting"
                    )
                if time.monotonic() - started >= limit:
                    raise self._load_failed(
                        child, f"not healthy after {limit:g}s (healthCheckTimeout; last check: {last})"
                    )
                if child.wait_exit(CHECK_INTERVAL):
                    raise self._load_failed(
                        child, f"the server exited (code {child.returncode}) while starting"
                    )

    def _load_failed(self, child: Child, why: str) -> ModelLoadError:
        return ModelLoadError(f"model {self.spec.slug!r}: {why}. Its last output:\n{child.last_output()}")

    def _exited(self, code: int) -> None:
        self._release_port()
        listener = self._exit_listener
        if listener is not None:
            listener(code)

    def unload(self) -> None:
        child, self.child = self.child, None
        if child is None:
            return
        stop_argv = None
        if self.spec.cmd_stop:
            stop_argv = [
                expand_runtime(p, port=self.port, pid=child.pid) for p in split_command(self.spec.cmd_stop)
            ]
        child.stop(stop_argv, self._env)
        self._release_port()
