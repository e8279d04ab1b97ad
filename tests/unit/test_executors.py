from __future__ import annotations

import importlib.util
from typing import Any

import pytest

from talkies.engines import unavailable_reason
from talkies.registry import ModelSpec


def spec(executor: str, **fields: Any) -> ModelSpec:
    return ModelSpec(slug="m", executor=executor, repo="org/repo", **fields)


def test_missing_extra_names_the_module_and_the_install(monkeypatch: pytest.MonkeyPatch) -> None:
    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == "faster_whisper" else real(name, *a)
    )
    reason = unavailable_reason(spec("whisper"), "cpu")
    assert reason is not None
    assert "faster_whisper" in reason
    assert "pip install 'talkies[whisper]'" in reason


def test_qwen3_runs_on_cpu_through_qwen_tts() -> None:
    # issue 13: beyond the contract's "CUDA only", qwen3_tts has a CPU runtime (qwen-tts on transformers)
    assert unavailable_reason(spec("qwen3_tts", qwen3_mode="base"), "cpu") is None


@pytest.mark.parametrize("executor", ["parakeet", "canary_multitask"])
def test_nemo_executors_name_the_nemo_extra_when_nemo_is_missing(
    monkeypatch: pytest.MonkeyPatch, executor: str
) -> None:
    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == "nemo" else real(name, *a)
    )
    reason = unavailable_reason(spec(executor), "cpu")
    assert reason is not None
    assert "pip install 'talkies[nemo]'" in reason
