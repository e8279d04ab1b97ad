from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from talkies.settings import Settings, load_settings
from tests.fakes import FakeFactory

REPO_ROOT = Path(__file__).resolve().parent.parent


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--engine-isolation",
        choices=("process", "inprocess"),
        default=None,
        help="API tests: run every engine the default factory builds in this mode, whatever the registry "
        "field and the executor's default say (CI runs tests/api once with each)",
    )


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        "pinned_isolation: every app in the module pins its engine isolation (weightfree_settings), so the "
        "--engine-isolation passes would only repeat it; it runs once, in the default pass",
    )


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture(autouse=True)
def _isolated_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """No TALKIES_* variable from the developer's shell leaks into a test."""
    import os

    for key in list(os.environ):
        if key.startswith("TALKIES_") and key != "TALKIES_TEST_CACHE":
            monkeypatch.delenv(key)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")


def write_registry(
    path: Path, models: dict[str, dict[str, Any]], groups: dict[str, Any] | None = None
) -> Path:
    body: dict[str, Any] = {"models": models}
    if groups:
        body["groups"] = groups
    path.write_text(json.dumps(body))
    return path


FAKE_MODELS: dict[str, dict[str, Any]] = {
    "asr-a": {"executor": "pocketsphinx"},
    "asr-b": {"executor": "pocketsphinx"},
    "tts-a": {"executor": "espeak"},
}


@pytest.fixture
def make_settings(tmp_path: Path) -> Callable[..., Settings]:
    """Settings on a temporary data dir and a registry of fake-able weight-free models."""

    def make(
        models: dict[str, dict[str, Any]] | None = None, groups: Any = None, **overrides: Any
    ) -> Settings:
        registry = write_registry(tmp_path / "models.json", models or FAKE_MODELS, groups)
        overrides.setdefault("models_file", registry)
        overrides.setdefault("data_dir", tmp_path / "data")
        overrides.setdefault("sweeper_interval", 0)
        return load_settings(**overrides)

    return make


@pytest.fixture
def fake_factory() -> FakeFactory:
    return FakeFactory()
