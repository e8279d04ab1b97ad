"""Issue 24 item 6: a worker engine says whether it is `alive`; a worker killed for one slug's engine
timeout is gone for every slug it hosts, so the pool reloads those instead of failing their next request."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

from talkies.engines.base import EngineContext, TranscriptionRequest
from talkies.errors import EngineTimeoutError
from talkies.registry import ModelSpec
from talkies.workers import ProcessEngine
from tests.engines.fake_engines import TARGET

pytestmark = pytest.mark.slow
SHARED = f"{TARGET}:SharedEchoTranscriber"


def _engine(slug: str, tmp_path: Path) -> Any:
    spec = ModelSpec.model_validate({"executor": "pocketsphinx", "slug": slug})
    context = EngineContext(slug=slug, model_dir=tmp_path / slug, device="cpu")
    return ProcessEngine(spec, context, target=SHARED, call_timeout=1.0)


def test_a_worker_killed_for_one_slugs_timeout_is_not_alive_for_its_siblings(tmp_path: Path) -> None:
    first, sibling = _engine("shared-a", tmp_path), _engine("shared-b", tmp_path)
    try:
        assert not first.alive  # not loaded: no worker
        first.load()
        sibling.load()
        assert first.worker_pid == sibling.worker_pid  # one worker holds both slugs
        assert first.alive
        assert sibling.alive
        with pytest.raises(EngineTimeoutError):
            first.transcribe(TranscriptionRequest(audio=np.zeros(16, np.float32), prompt="hang"))
        assert not first.alive
        assert not sibling.alive  # its worker was killed for the other slug's timeout
    finally:
        first.unload()
        sibling.unload()
