"""make_engine_factory: where each model runs (nothing is loaded, no process is started)."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from talkies.engines import EXECUTORS, isolation_for, make_engine_factory
from talkies.engines.base import EngineContext
from talkies.engines.host import ProcessEngine, ProcessTranscriber
from talkies.registry import ModelSpec
from talkies.settings import load_settings
from tests.engines.fake_engines import EchoTranscriber

FAKE = "tests.engines.fake_engines:EchoTranscriber"


@pytest.fixture(autouse=True)
def fake_targets(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("whisper", "pocketsphinx"):
        monkeypatch.setitem(EXECUTORS, name, dataclasses.replace(EXECUTORS[name], target=FAKE))


def _spec(executor: str, **fields: object) -> ModelSpec:
    repo = {"repo": "org/model"} if EXECUTORS[executor].needs_repo else {}
    return ModelSpec.model_validate({"executor": executor, "slug": "m", **repo, **fields})


def _context() -> EngineContext:
    return EngineContext(slug="m", model_dir=Path("/nonexistent"), device="cpu")


@pytest.mark.parametrize(
    ("setting", "executor", "override", "expected"),
    [
        ("process", "whisper", None, "process"),
        ("inprocess", "whisper", None, "inprocess"),
        ("process", "whisper", "inprocess", "inprocess"),
        ("inprocess", "whisper", "process", "process"),
        ("process", "pocketsphinx", None, "inprocess"),  # weight-free: in-process by default
        ("process", "pocketsphinx", "process", "process"),
    ],
)
def test_isolation_is_the_registry_field_then_the_executor_default_then_the_setting(
    setting: str, executor: str, override: str | None, expected: str
) -> None:
    settings = load_settings(engine_isolation=setting)
    spec = _spec(executor, isolation=override)
    assert isolation_for(spec, settings) == expected

    engine = make_engine_factory(settings)(spec, _context())

    if expected == "process":
        assert isinstance(engine, ProcessTranscriber)
    else:
        assert type(engine) is EchoTranscriber


def test_process_engines_get_the_timeouts_from_settings() -> None:
    settings = load_settings(engine_timeout="90s", load_timeout="2m")
    engine = make_engine_factory(settings)(_spec("whisper"), _context())
    assert isinstance(engine, ProcessEngine)
    assert engine.call_timeout == 90.0
    assert engine.load_timeout > 120.0  # past the pool's own timeout, so the pool answers first
    assert engine.worker_pid is None
