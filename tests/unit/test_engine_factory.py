"""make_engine_factory: where each model runs (nothing is loaded, no process is started)."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from talkies.engines import EXECUTORS, isolation_for, make_engine_factory
from talkies.engines.base import EngineContext
from talkies.registry import ModelSpec
from talkies.settings import load_settings
from talkies.workers import ProcessEngine, ProcessTranscriber
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
        (None, "whisper", None, "process"),
        (None, "pocketsphinx", None, "process"),  # weight-free, but holds the GIL for a whole utterance
        ("process", "whisper", None, "process"),
        ("inprocess", "whisper", None, "inprocess"),
        ("inprocess", "pocketsphinx", None, "inprocess"),  # the setting, once set, applies to every executor
        ("process", "whisper", "inprocess", "inprocess"),
        ("inprocess", "whisper", "process", "process"),
        ("inprocess", "pocketsphinx", "process", "process"),  # the registry field still wins
    ],
)
def test_isolation_is_the_registry_field_then_the_setting_then_the_executor_default(
    setting: str | None, executor: str, override: str | None, expected: str
) -> None:
    settings = load_settings(**({} if setting is None else {"engine_isolation": setting}))
    spec = _spec(executor, isolation=override)
    assert isolation_for(spec, settings) == expected

    engine = make_engine_factory(settings)(spec, _context())

    if expected == "process":
        assert isinstance(engine, ProcessTranscriber)
    else:
        assert type(engine) is EchoTranscriber


@pytest.mark.parametrize(("setting", "expected"), [(None, "inprocess"), ("process", "process")])
def test_espeak_stays_in_the_server_unless_the_setting_says_otherwise(
    setting: str | None, expected: str
) -> None:
    settings = load_settings(**({} if setting is None else {"engine_isolation": setting}))
    assert isolation_for(_spec("espeak"), settings) == expected


@pytest.mark.parametrize("setting", [None, "process", "inprocess"])
def test_an_external_process_model_always_stays_in_the_server(setting: str | None) -> None:
    """Its engine is a handle on a child process; a worker process around it would only add a hop."""
    settings = load_settings(**({} if setting is None else {"engine_isolation": setting}))
    spec = ModelSpec.model_validate(
        {"executor": "process", "slug": "m", "modality": "asr", "cmd": "server --port ${PORT}"}
    )
    assert isolation_for(spec, settings) == "inprocess"


def test_process_engines_get_the_timeouts_from_settings() -> None:
    settings = load_settings(engine_timeout="90s", load_timeout="2m")
    engine = make_engine_factory(settings)(_spec("whisper"), _context())
    assert isinstance(engine, ProcessEngine)
    assert engine.call_timeout == 90.0
    assert engine.load_timeout > 120.0  # past the pool's own timeout, so the pool answers first
    assert engine.worker_pid is None
