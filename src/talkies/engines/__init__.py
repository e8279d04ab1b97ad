"""The one table that maps registry executor names to engine classes.

Engine modules are imported only when a model of theirs is first built, and their heavy libraries only
inside `load()`, so the server starts with nothing but the core installed. `unavailable_reason()` tells,
without importing anything, why a model cannot run here (extra not installed, no GPU, not built yet).
"""

from __future__ import annotations

import importlib
import importlib.util
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, cast

from talkies.engines.base import Engine, EngineContext, Modality

if TYPE_CHECKING:
    from talkies.registry import ModelSpec
    from talkies.settings import Settings


@dataclass(frozen=True, slots=True)
class ExecutorInfo:
    name: str
    modality: Modality
    target: str | None  # "module:Class"; None = not built yet
    extra: str | None = None  # pip extra that installs its libraries
    requires: tuple[str, ...] = ()  # importable modules it needs
    needs_repo: bool = True  # False: weight-free, no snapshot
    cuda_only: bool = False
    isolation: str = "process"  # default isolation; weight-free engines stay in-process


EXECUTORS: dict[str, ExecutorInfo] = {
    info.name: info
    for info in (
        ExecutorInfo(
            "whisper", "asr", "talkies.engines.whisper:WhisperEngine", "whisper", ("faster_whisper",)
        ),
        ExecutorInfo("parakeet", "asr", None, "nemo", ("nemo",)),
        ExecutorInfo("parakeet_cpp", "asr", None),
        ExecutorInfo("canary_multitask", "asr", None, "nemo", ("nemo",)),
        ExecutorInfo("canary_salm", "asr", None, "nemo", ("nemo",)),
        ExecutorInfo(
            "pocketsphinx",
            "asr",
            "talkies.engines.pocketsphinx:PocketsphinxEngine",
            "cpu",
            ("pocketsphinx",),
            needs_repo=False,
            isolation="inprocess",
        ),
        ExecutorInfo(
            "kokoro", "tts", "talkies.engines.kokoro:KokoroEngine", "kokoro", ("kokoro", "misaki", "torch")
        ),
        ExecutorInfo(
            "kokoro_nvidia",
            "tts",
            "talkies.engines.kokoro_onnx:KokoroOnnxEngine",
            "kokoro-onnx",
            ("onnxruntime", "phonemizer"),
        ),
        ExecutorInfo("qwen3_tts", "tts", None, "qwen3", ("faster_qwen3_tts",), cuda_only=True),
        ExecutorInfo(
            "espeak",
            "tts",
            "talkies.engines.espeak:EspeakEngine",
            None,
            needs_repo=False,
            isolation="inprocess",
        ),
    )
}


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


def engine_class(executor: str) -> type[Engine]:
    info = EXECUTORS[executor]
    if info.target is None:
        raise LookupError(f"executor {executor!r} is not built")
    module_name, _, class_name = info.target.partition(":")
    return cast("type[Engine]", getattr(importlib.import_module(module_name), class_name))


def create_engine(spec: ModelSpec, context: EngineContext) -> Engine:
    """Construct (not load) the engine for `spec`. Cheap: no weights, no heavy imports."""
    cls = engine_class(spec.executor)
    return cls(spec, context)  # type: ignore[call-arg]


def isolation_for(spec: ModelSpec, settings: Settings) -> str:
    """Where `spec` runs: its registry `isolation`, else "inprocess" for executors that hold no large
    native memory, else TALKIES_ENGINE_ISOLATION."""
    if spec.isolation is not None:
        return spec.isolation
    if EXECUTORS[spec.executor].isolation == "inprocess":
        return "inprocess"
    return settings.engine_isolation


def make_engine_factory(settings: Settings) -> Callable[[ModelSpec, EngineContext], Engine]:
    """The pool's engine factory: a `ProcessEngine` (talkies.engines.host) or the engine itself."""
    if settings.engine_isolation == "process":
        from talkies.engines.host import start_helpers

        start_helpers()  # part of the server's idle footprint, not of the first model's

    def factory(spec: ModelSpec, context: EngineContext) -> Engine:
        if isolation_for(spec, settings) == "inprocess":
            return create_engine(spec, context)
        from talkies.engines.host import ProcessEngine

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
