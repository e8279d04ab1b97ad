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


def test_cuda_only_executor_on_cpu() -> None:
    reason = unavailable_reason(spec("qwen3_tts", qwen3_mode="base"), "cpu")
    assert reason is not None
    assert "not built" in reason or "CUDA" in reason
