"""Model pulls run by the server: `POST /api/pull` and a model's first use, one pull per model at a time.

`PullManager` is the one owner of the pulls in flight. It lives on the event loop: each pull is a task
that runs `talkies.engines.pull_runner` in a child process and turns its NDJSON lines into the pull's
state; callers never hold a lock. A second pull of a model joins the first: it sees the lines so far (the
latest per file, so a late joiner does not replay every byte count) and then the new ones. Nobody who
waits owns the pull: a client that goes away stops reading, and the pull goes on for the others, and for
the disk (the next load finds the snapshot there). Only `close()` (server shutdown) stops a pull; the part
file stays, and the next pull resumes it with a Range request.

The manager also says what `/v1/models` shows per model (`installed`, `download_bytes`, a pull's
progress), removes a snapshot (`DELETE /api/models/{slug}`), and counts pulls for `/metrics`.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import shutil
import sys
import time
from collections import Counter, OrderedDict
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import anyio
import anyio.to_thread
from anyio.abc import Process

from talkies.engines import required_files, snapshot_patterns
from talkies.engines.base import Engine, EngineContext
from talkies.engines.snapshot import COMPLETE_MARKER, PULL_RECORD, check_snapshot, snapshot_present
from talkies.errors import EngineUnavailableError, ModelInUseError, ModelNotFoundError
from talkies.registry import ModelSpec, Registry
from talkies.registry.schema import EXECUTORS

log = logging.getLogger(__name__)

MAX_LINE = 1 << 20
"""A line of the runner longer than this is a broken runner, not progress."""
LOG_STEP = 10
"""Percent of a pull between two progress lines in the server log."""
LIST_INTERVAL = 3600.0
"""Seconds between two readings of the hub's listings for the sizes of models not on disk."""
LIST_TIMEOUT = 120.0
"""Seconds one reading of the listings may take (an unreachable hub is given up on)."""


@dataclass
class Pull:
    """One model's pull in flight (or just finished)."""

    slug: str
    trigger: str  # "api" (POST /api/pull) or "first_use" (a request loading a model not on disk)
    lines: OrderedDict[str, tuple[int, dict[str, Any]]] = field(default_factory=OrderedDict)
    seq: int = 0
    changed: anyio.Event = field(default_factory=anyio.Event)
    done: bool = False
    error: str | None = None
    download_bytes: int | None = None
    received: dict[str, int] = field(default_factory=dict)  # file -> bytes completed
    logged_step: int = -1

    def add(self, event: dict[str, Any]) -> None:
        self.seq += 1
        key = str(event.get("status", "error"))
        self.lines.pop(key, None)
        self.lines[key] = (self.seq, event)  # the latest line per status, in the order they last changed
        self.changed.set()
        self.changed = anyio.Event()

    def since(self, seen: int) -> list[tuple[int, dict[str, Any]]]:
        return [entry for entry in self.lines.values() if entry[0] > seen]

    @property
    def completed(self) -> int:
        return sum(self.received.values())

    def progress(self) -> dict[str, Any]:
        return {"status": "pulling", "completed": self.completed, "total": self.download_bytes}


def _is_file_line(event: dict[str, Any]) -> bool:
    return str(event.get("status", "")).startswith("pulling ") and "completed" in event


class PullManager:
    """Pulls by slug: start or join (`follow`), wait (`ensure`), state for the model list, delete."""

    def __init__(
        self,
        registry: Registry,
        models_dir: Path,
        *,
        python: str = sys.executable,
        is_busy: Callable[[str], bool] = lambda slug: False,
    ) -> None:
        self.registry = registry
        self.models_dir = models_dir
        self.python = python
        self.is_busy = is_busy  # late-bound: the pool is built after the manager
        self._pulls: dict[str, Pull] = {}
        self._tasks: dict[str, asyncio.Task[None]] = {}
        self._processes: dict[str, Process] = {}
        self.finished: Counter[tuple[str, str, str]] = Counter()  # (slug, trigger, result) -> pulls
        self.bytes_pulled: Counter[str] = Counter()
        self._listed: dict[str, int] = {}  # slug -> download size from the hub's listing
        self._listing: asyncio.Task[None] | None = None
        self._listed_at: float | None = None

    # --- state for the model list -------------------------------------------------------------------

    def model_dir(self, spec: ModelSpec) -> Path:
        return self.models_dir / spec.slug

    def needs_snapshot(self, spec: ModelSpec) -> bool:
        return EXECUTORS[spec.executor].needs_repo and bool(spec.repo)

    def installed(self, spec: ModelSpec) -> bool:
        """A complete snapshot on disk, or nothing to download."""
        return not self.needs_snapshot(spec) or snapshot_present(self.model_dir(spec), required_files(spec))

    def download_bytes(self, spec: ModelSpec) -> int | None:
        """The hub listing's size when a pull has read it (this run, or recorded on disk) or
        `list_sizes_soon` has, else the registry's estimate; 0 for a model with nothing to download."""
        if not self.needs_snapshot(spec):
            return 0
        pull = self._pulls.get(spec.slug)
        if pull is not None and pull.download_bytes is not None:
            return pull.download_bytes
        for name in (COMPLETE_MARKER, PULL_RECORD):
            listed = _listed_bytes(self.model_dir(spec) / name)
            if listed is not None:
                return listed
        return self._listed.get(spec.slug, spec.download_bytes)

    def list_sizes_soon(self) -> None:
        """Read the hub's listings of the models not on disk (in the background, at most once an hour),
        so that `download_bytes` becomes the exact size. Nothing with HF_HUB_OFFLINE set."""
        if os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in ("1", "true", "yes", "on"):
            return
        if self._listing is not None and not self._listing.done():
            return
        if self._listed_at is not None and time.monotonic() - self._listed_at < LIST_INTERVAL:
            return
        specs = [
            s
            for s in self.registry.models.values()
            if self.needs_snapshot(s) and s.slug not in self._listed and not self.installed(s)
        ]
        if specs:
            self._listed_at = time.monotonic()
            self._listing = asyncio.create_task(self._list_sizes(specs), name="list model sizes")

    async def _list_sizes(self, specs: list[ModelSpec]) -> None:
        models = [
            {"slug": s.slug, "repo": s.repo, "patterns": await anyio.to_thread.run_sync(snapshot_patterns, s)}
            for s in specs
        ]
        argv = [self.python, "-m", "talkies.engines.pull_runner", "--list", json.dumps(models)]
        try:
            with anyio.fail_after(LIST_TIMEOUT):
                done = await anyio.run_process(argv, check=False, stderr=None)
        except TimeoutError:
            log.info("reading the hub's listings took over %gs; the sizes stay estimates", LIST_TIMEOUT)
            return
        for line in done.stdout.decode(errors="replace").splitlines():
            try:
                answer = json.loads(line)
            except ValueError:
                continue
            if isinstance(answer.get("download_bytes"), int):
                self._listed[str(answer["slug"])] = answer["download_bytes"]
            else:
                log.debug("no listing for %s: %s", answer.get("slug"), answer.get("error"))

    def progress(self, slug: str) -> dict[str, Any] | None:
        """A pull in flight: `{"status": "pulling", "completed": bytes, "total": bytes or None}`."""
        pull = self._pulls.get(slug)
        return pull.progress() if pull is not None and not pull.done else None

    def in_flight(self) -> dict[str, Pull]:
        return {slug: pull for slug, pull in self._pulls.items() if not pull.done}

    # --- pulling ------------------------------------------------------------------------------------

    def spec(self, slug: str) -> ModelSpec:
        spec = self.registry.get(slug)
        if spec is None:
            raise ModelNotFoundError(
                f"model {slug!r} not found; available models: {', '.join(self.registry.models)}",
                param="model",
            )
        return spec

    def start(self, spec: ModelSpec, trigger: str) -> Pull:
        """The pull of `spec` in flight, started now when there is none."""
        pull = self._pulls.get(spec.slug)
        if pull is not None and not pull.done:
            return pull
        pull = Pull(spec.slug, trigger)
        self._pulls[spec.slug] = pull
        self._tasks[spec.slug] = asyncio.create_task(self._run(spec, pull), name=f"pull {spec.slug}")
        return pull

    async def follow(self, slug: str, trigger: str = "api") -> AsyncIterator[dict[str, Any]]:
        """Start or join the pull of `slug`; its progress lines, ending with success or an error line.
        Raises ModelNotFoundError before the first line for an unknown slug."""
        spec = self.spec(slug)
        pull = self._pulls.get(spec.slug)
        if pull is None or pull.done:
            if not self.needs_snapshot(spec) or await self._complete(spec):
                yield {"status": "success"}  # nothing to download, or a verified snapshot already there
                return
            pull = self.start(spec, trigger)
        seen = 0
        while True:
            changed = pull.changed
            for seq, event in pull.since(seen):
                seen = seq
                yield event
            if pull.done and not pull.since(seen):
                return
            await changed.wait()

    async def _complete(self, spec: ModelSpec) -> bool:
        state = await anyio.to_thread.run_sync(check_snapshot, self.model_dir(spec))
        return state.status == "complete"

    async def ensure(self, slug: str) -> None:
        """Pull `slug` unless its snapshot is on disk; raise EngineUnavailableError when the pull fails."""
        spec = self.spec(slug)
        # A directory laid out by hand is used as it is (the engine names what it lacks): never pulled into.
        if not self.needs_snapshot(spec) or snapshot_present(self.model_dir(spec)):
            return
        pull = self.start(spec, "first_use")
        while True:
            changed = pull.changed
            if pull.done:
                break
            await changed.wait()
        if pull.error is not None:
            raise EngineUnavailableError(pull.error)

    async def _run(self, spec: ModelSpec, pull: Pull) -> None:
        log.info("pulling %s from %s (%s)", spec.slug, spec.repo, pull.trigger)
        try:
            await self._run_child(spec, pull)
        except Exception as exc:  # the runner could not start, its output was not NDJSON, ...
            log.exception("pull of %s failed", spec.slug)
            pull.add({"error": f"model {spec.slug!r}: the pull failed: {type(exc).__name__}: {exc}"})
            pull.error = f"{type(exc).__name__}: {exc}"
        finally:
            if not any("error" in e or e.get("status") == "success" for _, e in pull.lines.values()):
                pull.error = pull.error or "the pull stopped before it finished"
                pull.add({"error": f"model {spec.slug!r}: {pull.error}"})
            pull.done = True
            result = "error" if pull.error else "ok"
            self.finished[(spec.slug, pull.trigger, result)] += 1
            log.log(
                logging.WARNING if pull.error else logging.INFO,
                "pull of %s: %s",
                spec.slug,
                pull.error or "complete",
            )
            pull.changed.set()
            self._tasks.pop(spec.slug, None)

    async def _run_child(self, spec: ModelSpec, pull: Pull) -> None:
        argv = [self.python, "-m", "talkies.engines.pull_runner", "--slug", spec.slug]
        argv += ["--repo", str(spec.repo), "--dir", str(self.model_dir(spec))]
        for pattern in await anyio.to_thread.run_sync(snapshot_patterns, spec) or ():
            argv += ["--pattern", pattern]
        for dependency in spec.dependencies:
            argv += ["--dependency", dependency]
        async with await anyio.open_process(argv, stdin=None, stderr=None) as process:
            self._processes[spec.slug] = process
            try:
                assert process.stdout is not None
                buffer = b""
                async for chunk in process.stdout:
                    buffer += chunk
                    *lines, buffer = buffer.split(b"\n")
                    if len(buffer) > MAX_LINE:
                        raise ValueError("the pull runner wrote a line over 1 MiB")
                    for line in lines:
                        if line.strip():
                            self._event(spec, pull, json.loads(line))
                code = await process.wait()
            finally:
                self._processes.pop(spec.slug, None)
        if code != 0 and pull.error is None:
            pull.error = f"the pull runner exited with status {code}"

    def _event(self, spec: ModelSpec, pull: Pull, event: dict[str, Any]) -> None:
        if "error" in event:
            pull.error = str(event["error"])
            pull.add({"error": pull.error})
            return
        if event.get("status") == "pulling manifest" and "download_bytes" in event:
            pull.download_bytes = int(event["download_bytes"])
        if _is_file_line(event):
            name = str(event["status"]).removeprefix("pulling ")
            before = pull.received.get(name, 0)
            now = int(event["completed"])
            pull.received[name] = now
            self.bytes_pulled[spec.slug] += max(0, now - before)
            self._log_progress(pull)
        pull.add(event)

    def _log_progress(self, pull: Pull) -> None:
        total = pull.download_bytes
        if not total:
            return
        step = min(100, pull.completed * 100 // total) // LOG_STEP * LOG_STEP
        if step > pull.logged_step:
            pull.logged_step = step
            log.info(
                "pulling %s: %d%% (%.1f of %.1f MiB)", pull.slug, step, pull.completed / 2**20, total / 2**20
            )

    def pulling_first(
        self, factory: Callable[[ModelSpec, EngineContext], Engine]
    ) -> Callable[[ModelSpec, EngineContext], Engine]:
        """The pool's engine factory, with engines whose `load()` first pulls a missing snapshot here (so
        a first use is one pull that `POST /api/pull` joins, logged and counted) and only then loads."""

        def factory_pulling_first(spec: ModelSpec, context: EngineContext) -> Engine:
            engine = factory(spec, context)
            try:
                loop = asyncio.get_running_loop()  # the pool builds engines on the event loop
            except RuntimeError:
                return engine  # built elsewhere: the engine's own load pulls what it needs
            if self.needs_snapshot(spec):
                load = engine.load

                def load_after_pull() -> None:  # in the pool's load thread, never on the loop
                    if not self.installed(spec):
                        asyncio.run_coroutine_threadsafe(self.ensure(spec.slug), loop).result()
                    load()

                engine.load = load_after_pull  # type: ignore[method-assign]
            return engine

        return factory_pulling_first

    # --- removing -----------------------------------------------------------------------------------

    async def delete(self, slug: str) -> bool:
        """Remove `slug`'s snapshot; False when there was none. Refused (409) while the model is loaded,
        loading or in use, or while it is being pulled."""
        spec = self.spec(slug)
        if self.is_busy(spec.slug):
            raise ModelInUseError(
                f"model {spec.slug!r} is loaded or in use; unload it first (DELETE /api/ps/{spec.slug})"
            )
        if spec.slug in self.in_flight():
            raise ModelInUseError(f"model {spec.slug!r} is being pulled; delete it once the pull ended")
        model_dir = self.model_dir(spec)
        if not model_dir.exists():
            return False
        await anyio.to_thread.run_sync(shutil.rmtree, model_dir)
        self._pulls.pop(spec.slug, None)
        log.info("removed the snapshot of %s (%s)", spec.slug, model_dir)
        return True

    async def close(self) -> None:
        """Stop every pull (server shutdown): what arrived stays on disk for the next pull to resume."""
        for process in list(self._processes.values()):
            with contextlib.suppress(ProcessLookupError):
                process.kill()
        tasks = list(self._tasks.values())
        if self._listing is not None:
            tasks.append(self._listing)
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task


def _listed_bytes(path: Path) -> int | None:
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
        sizes = [meta.get("size") for meta in record["files"].values()]
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return None
    return sum(size for size in sizes if isinstance(size, int))
