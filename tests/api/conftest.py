from __future__ import annotations

import pytest

from talkies import engines


@pytest.fixture(autouse=True)
def _engine_isolation(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> None:
    """`--engine-isolation=MODE`: the whole API suite with every engine in worker processes, or none."""
    mode = request.config.getoption("--engine-isolation")
    if mode is not None:
        monkeypatch.setattr(engines, "isolation_for", lambda spec, settings: mode)
