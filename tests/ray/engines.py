"""Engine factories the Ray tests hand to `build_app` (imported by the model-server replicas by name)."""

from __future__ import annotations

from dataclasses import replace

from talkies.engines import create_engine
from talkies.engines.base import Engine, EngineContext
from talkies.registry import ModelSpec

BOUNDED = {"beam_size": 1, "max_new_tokens": 10, "condition_on_previous_text": False}


def bounded_engine(spec: ModelSpec, context: EngineContext) -> Engine:
    """The real engines, in process; whisper ones with bounded decoding (random weights never stop)."""
    if spec.executor == "whisper":
        context = replace(context, options={**context.options, **BOUNDED})
    return create_engine(spec, context)
