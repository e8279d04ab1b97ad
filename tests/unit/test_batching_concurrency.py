"""registry/batching.py: effective batch limits, and the concurrency that lets a batch fill."""

from __future__ import annotations

from talkies.registry.batching import batch_limits, batching_concurrency
from talkies.registry.schema import ModelSpec


def spec(**fields: object) -> ModelSpec:
    return ModelSpec.model_validate({"slug": "m", "repo": "t/m", **fields})


def test_batch_limits_are_the_entrys_else_the_executors() -> None:
    assert batch_limits(spec(executor="whisper")) == (8, 10.0)
    assert batch_limits(spec(executor="parakeet_cpp")) == (8, 10.0)
    assert batch_limits(spec(executor="parakeet")) == (4, 10.0)
    assert batch_limits(spec(executor="canary_multitask", max_batch_size=2, max_batch_wait_ms=0)) == (2, 0)
    assert batch_limits(spec(executor="kokoro")) == (0, 0.0)


def test_an_unset_max_concurrency_admits_a_full_batch_when_batching() -> None:
    assert batching_concurrency(spec(executor="whisper"), True).max_concurrency == 8
    assert batching_concurrency(spec(executor="parakeet", max_batch_size=6), True).max_concurrency == 6
    assert batching_concurrency(spec(executor="whisper"), False).max_concurrency == 1


def test_an_explicit_max_concurrency_and_non_batching_models_are_kept() -> None:
    assert batching_concurrency(spec(executor="whisper", max_concurrency=1), True).max_concurrency == 1
    assert batching_concurrency(spec(executor="whisper", max_concurrency=3), True).max_concurrency == 3
    assert batching_concurrency(spec(executor="whisper", max_batch_size=1), True).max_concurrency == 1
    assert batching_concurrency(spec(executor="kokoro"), True).max_concurrency == 1
