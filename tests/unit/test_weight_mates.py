"""Slugs on one repository of an executor that shares weights hold one loaded copy: with room for a single
model they stay resident together and do not evict each other (the pool asks registry.weight_mates)."""

from __future__ import annotations

from typing import Any

import pytest

from talkies.pool import ModelPool
from talkies.registry import load_registry
from tests.fakes import FakeClock, FakeFactory

pytestmark = pytest.mark.anyio

MODELS = {
    "canary": {"executor": "canary_multitask", "repo": "nvidia/canary-1b-flash"},
    "canary-de2en": {
        "executor": "canary_multitask",
        "repo": "nvidia/canary-1b-flash",
        "default_source_lang": "de",
    },
    "canary-small": {"executor": "canary_multitask", "repo": "nvidia/canary-180m-flash"},
}


async def test_weight_mates_share_one_slot(make_settings: Any, fake_factory: FakeFactory) -> None:
    settings = make_settings(MODELS, max_loaded_models=1)
    assert settings.models_file is not None
    pool = ModelPool(
        load_registry(settings.models_file), settings, engine_factory=fake_factory, clock=FakeClock()
    )
    for slug in ("canary", "canary-de2en", "canary", "canary-de2en"):
        async with pool.acquire(slug):
            pass
    assert {row["model"] for row in pool.ps()} == {"canary", "canary-de2en"}
    assert fake_factory["canary"].loads == fake_factory["canary-de2en"].loads == 1
    async with pool.acquire("canary-small"):  # another repository: both mates go
        pass
    assert [row["model"] for row in pool.ps()] == ["canary-small"]
