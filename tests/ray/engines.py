"""Engine factories the Ray tests hand to `build_app` (imported by the model-server replicas by name)."""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import replace
from typing import cast

from talkies.engines import create_engine
from talkies.engines.base import Engine, EngineContext, checkpoint
from talkies.registry import ModelSpec

BOUNDED = {"beam_size": 1, "max_new_tokens": 10, "condition_on_previous_text": False}


def bounded_engine(spec: ModelSpec, context: EngineContext) -> Engine:
    """The real engines, in process; whisper ones with bounded decoding (random weights never stop)."""
    if spec.executor == "whisper":
        context = replace(context, options={**context.options, **BOUNDED})
    return create_engine(spec, context)


class EndlessVoice:
    """espeak-ng's first chunk of a request, then the same chunk again every 50 ms, up to 2000 times,
    stopping at the request's cancellation (`checkpoint`). Each request appends its count of chunks made
    to `$TALKIES_DATA_DIR/endless.log` when its generator closes, however it ends."""

    def __init__(self, inner: Engine, log: str) -> None:
        self._inner = inner
        self._log = log

    def __getattr__(self, name: str) -> object:
        return getattr(self._inner, name)

    def synthesize(self, request: object) -> Iterator[object]:
        made = 0
        try:
            first = next(iter(self._inner.synthesize(request)))  # type: ignore[attr-defined]
            for _ in range(2000):
                checkpoint()
                made += 1
                yield first
                time.sleep(0.05)
        finally:
            with open(self._log, "a") as log:
                log.write(f"{made}\n")


def endless_voice_engine(spec: ModelSpec, context: EngineContext) -> Engine:
    engine = create_engine(spec, context)
    if spec.executor != "espeak":
        return engine
    log = str(context.model_dir.parent.parent / "endless.log")  # $TALKIES_DATA_DIR/models/<slug>
    return cast(Engine, EndlessVoice(engine, log))
