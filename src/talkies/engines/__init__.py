"""The one table that maps registry executor names to engine classes.

Engine modules are imported only when a model of theirs is first built, and their heavy libraries only
inside `load()`, so the server starts with nothing but the core installed. `unavailable_reason()` tells,
without importing anything, why a model cannot run here (extra not installed, no GPU, not built yet).
"""

from __future__ import annotations

import dataclasses
import importlib
import importlib.util
from collections.abc import Callable
from typing import TYPE_CHECKING, cast

from talkies.engines.base import Engine, EngineContext
from talkies.registry.schema import EXECUTORS, ExecutorInfo

__all__ = [
    "EXECUTORS",
    "ExecutorInfo",
    "create_engine",
    "engine_class",
    "isolation_for",
    "make_engine_factory",
    "model_installed",
    "required_files",
    "snapshot_patterns",
    "unavailable_reason",
]

if TYPE_CHECKING:
    from pathlib import Path

    from talkies.registry.schema import ModelSpec
    from talkies.settings import Settings


def unavailable_reason(spec: ModelSpec, device: str) -> str | None:
    """Why `spec` cannot run on this server, with how to fix it; None when it can."""
    info = EXECUTORS[spec.executor]
    if info.target is None:
        return f"the {info.name!r} executor is not built into this version of talkies yet"
    if info.cuda_only and not device.startswith("cuda"):
        return f"the {info.name!r} executor needs a CUDA GPU (TALKIES_DEVICE is {device})"
    missing = [m for m in info.requires if importlib.util.find_spec(m) is None]
    if missing:
        how = f"pip install 'talkies[{info.extra}]'" if info.extra else "see the README"
        return f"the {info.name!r} executor needs {', '.join(missing)}, which is not installed ({how})"
    return None


def model_installed(spec: ModelSpec, device: str, models_dir: Path) -> bool:
    """Whether `spec` can serve a request here without a download: it can run on this device with the
    extras installed, and it is weight-free or its snapshot is on disk (a default model is picked by this)."""
    from talkies.engines.snapshot import snapshot_present

    if unavailable_reason(spec, device) is not None:
        return False
    return not EXECUTORS[spec.executor].needs_repo or snapshot_present(
        models_dir / spec.slug, required_files(spec)
    )


def engine_class(executor: str) -> type[Engine]:
    info = EXECUTORS[executor]
    if info.target is None:
        raise LookupError(f"executor {executor!r} is not built")
    module_name, _, class_name = info.target.partition(":")
    return cast("type[Engine]", getattr(importlib.import_module(module_name), class_name))


def snapshot_patterns(spec: ModelSpec) -> list[str] | None:
    """The files `talkies pull` fetches for `spec`: its `gguf_file`, else the executor's `snapshot_patterns`
    in the schema, else what its engine class names (a `patterns_for(spec)` classmethod or a
    `snapshot_patterns` attribute), else the whole repository."""
    if spec.gguf_file:
        return [spec.gguf_file]
    listed = EXECUTORS[spec.executor].snapshot_patterns
    if listed:
        return list(listed)
    try:
        cls = engine_class(spec.executor)
    except (LookupError, ImportError):
        return None
    patterns_for = getattr(cls, "patterns_for", None)
    patterns = patterns_for(spec) if callable(patterns_for) else getattr(cls, "snapshot_patterns", None)
    return list(patterns) if patterns else None


def required_files(spec: ModelSpec) -> tuple[str, ...]:
    """What a snapshot of `spec` laid out by hand must hold (globs, each matching a file): the executor's
    `required_files` in the schema, else its engine class's `required_files` attribute, else nothing."""
    info = EXECUTORS[spec.executor]
    if info.required_files or not info.needs_repo:
        return info.required_files
    try:
        cls = engine_class(spec.executor)
    except (LookupError, ImportError):
        return ()
    declared = getattr(cls, "required_files", ())
    return tuple(declared) if isinstance(declared, tuple | list) else ()


def create_engine(spec: ModelSpec, context: EngineContext) -> Engine:
    """Construct (not load) the engine for `spec`. Cheap: no weights, no heavy imports."""
    cls = engine_class(spec.executor)
    return cls(spec, context)  # type: ignore[call-arg]


def isolation_for(spec: ModelSpec, settings: Settings) -> str:
    """Where `spec` runs: its registry `isolation`; else TALKIES_ENGINE_ISOLATION when it is set (it then
    applies to every executor); else the executor's own default (a worker process for every engine that holds
    native memory or runs native code, the server process for espeak-ng). The `process` executor's engine is
    only a handle on an external child, so it always stays in the server process."""
    info = EXECUTORS[spec.executor]
    if info.server_only:
        return "inprocess"
    if spec.isolation is not None:
        return spec.isolation
    if "engine_isolation" in settings.model_fields_set:
        return settings.engine_isolation
    return info.isolation


def make_engine_factory(settings: Settings) -> Callable[[ModelSpec, EngineContext], Engine]:
    """The pool's engine factory: a `ProcessEngine` (talkies.workers) or the engine itself."""
    if settings.engine_isolation == "process":
        from talkies.workers import start_helpers

        start_helpers()  # part of the server's idle footprint, not of the first model's

    def factory(spec: ModelSpec, context: EngineContext) -> Engine:
        if spec.executor == "process":  # what of talkies' environment its server may see
            context = dataclasses.replace(
                context, options={**context.options, "child_env": settings.child_env}
            )
        if isolation_for(spec, settings) == "inprocess":
            return create_engine(spec, context)
        from talkies.workers import ProcessEngine

        target = EXECUTORS[spec.executor].target
        if target is None:
            raise LookupError(f"executor {spec.executor!r} is not built")
        return ProcessEngine(
            spec,
            context,
            target=target,
            call_timeout=settings.engine_timeout,
            # a little past the pool's own load timeout: the pool answers first, then the worker is killed
            load_timeout=settings.load_timeout + 5.0,
        )

    return factory
