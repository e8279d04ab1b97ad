"""llama-swap's group flags with real children: which servers a load stops (their processes gone from the
process table), in a JSON registry that mixes `process` models with a built-in engine."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import httpx

from tests.api.audio_helpers import VOICE
from tests.process.conftest import pid_gone, ps_row, script_model, wait_for

Outer = Callable[..., Any]


def speak(client: httpx.Client, model: str) -> int:
    """One speech request for `model`; returns the pid now serving it (0 for a built-in engine)."""
    answer = client.post("/v1/audio/speech", json={"model": model, "input": "x", "voice": VOICE})
    assert answer.status_code == 200, answer.text
    row = ps_row(client, model)
    assert row is not None
    assert row["loaded"]
    return int(row.get("pid") or 0)


def resident(client: httpx.Client) -> set[str]:
    return {row["model"] for row in client.get("/api/ps").json()["models"] if row["loaded"]}


def test_swap_exclusive_and_persistent_groups(outer: Outer) -> None:
    models = {
        name: script_model()
        for name in ("swap-a", "swap-b", "pair-a", "pair-b", "keeper")  # all process models
    }
    models["espeak-ng"] = {"executor": "espeak", "default_voice": VOICE}  # a built-in one beside them
    groups = {
        "swapper": {"members": ["swap-a", "swap-b"], "swap": True, "exclusive": False},
        "pair": {"members": ["pair-a", "pair-b"], "swap": False, "exclusive": True},
        "kept": {"members": ["keeper"], "exclusive": False, "persistent": True},
    }
    with outer(models, groups, max_loaded_models=2) as url, httpx.Client(base_url=url, timeout=60) as client:
        keeper = speak(client, "keeper")
        swap_a = speak(client, "swap-a")
        # not exclusive: loading swap-a left the persistent keeper alone
        assert resident(client) == {"keeper", "swap-a"}

        # swap: loading swap-b stops swap-a's server; the persistent keeper stays
        swap_b = speak(client, "swap-b")
        wait_for(lambda: pid_gone(swap_a))
        assert resident(client) == {"keeper", "swap-b"}

        # swap false: both members of the pair stay; exclusive: every other group's models go, except
        # the persistent one's
        pair_a = speak(client, "pair-a")
        pair_b = speak(client, "pair-b")
        wait_for(lambda: pid_gone(swap_b))
        assert resident(client) == {"keeper", "pair-a", "pair-b"}
        assert not pid_gone(keeper)

        # a model outside every group follows TALKIES_MAX_LOADED_MODELS (2 here, the persistent member
        # not counted): it evicts the least recently used, pair-a, and never the persistent one
        speak(client, "espeak-ng")
        wait_for(lambda: pid_gone(pair_a))
        assert resident(client) == {"keeper", "pair-b", "espeak-ng"}
        assert not pid_gone(keeper)
        assert not pid_gone(pair_b)
