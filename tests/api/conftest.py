from __future__ import annotations

import pytest

from talkies import engines
from talkies.registry import ModelSpec
from talkies.settings import Settings


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """`--engine-isolation` passes leave out the modules marked `pinned_isolation`: their apps choose
    their own isolation (weightfree_settings), so the pass would run them again unchanged."""
    if config.getoption("--engine-isolation") is None:
        return
    kept = [item for item in items if item.get_closest_marker("pinned_isolation") is None]
    if len(kept) < len(items):
        config.hook.pytest_deselected(items=[item for item in items if item not in kept])
        items[:] = kept


@pytest.fixture(autouse=True)
def _engine_isolation(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> None:
    """`--engine-isolation=MODE`: the API suite with every engine in worker processes, or none.

    A test that chose isolation itself (a registry `isolation` field, or `engine_isolation` passed to its
    settings) keeps its choice."""
    mode = request.config.getoption("--engine-isolation")
    if mode is None:
        return
    chosen = engines.isolation_for

    def forced(spec: ModelSpec, settings: Settings) -> str:
        if spec.isolation is not None or "engine_isolation" in settings.model_fields_set:
            return chosen(spec, settings)
        return str(mode)

    monkeypatch.setattr(engines, "isolation_for", forced)
