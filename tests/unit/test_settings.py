from __future__ import annotations

from pathlib import Path

import pytest

from talkies.errors import ConfigError
from talkies.memory import parse_budget
from talkies.settings import default_data_dir, load_settings, parse_duration


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("90", 90.0),
        ("1.5", 1.5),
        ("90s", 90.0),
        ("45m", 2700.0),
        ("3h30m5s", 12605.0),
        ("1h", 3600.0),
        ("250ms", 0.25),
        ("1m30s", 90.0),
        (" 10S ", 10.0),
        (0, 0.0),
    ],
)
def test_parse_duration(text: object, seconds: float) -> None:
    assert parse_duration(text) == pytest.approx(seconds)


@pytest.mark.parametrize("text", ["", "abc", "10x", "m", "1h-5m", "-5", "5 m", "s10"])
def test_parse_duration_rejects(text: str) -> None:
    with pytest.raises(ValueError, match="duration"):
        parse_duration(text)


def test_durations_from_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TALKIES_MODEL_TTL", "3h30m5s")
    monkeypatch.setenv("TALKIES_SWEEPER_INTERVAL", "45m")
    monkeypatch.setenv("TALKIES_LOAD_TIMEOUT", "90s")
    monkeypatch.setenv("TALKIES_QUEUE_TIMEOUT", "12")
    s = load_settings()
    assert (s.model_ttl, s.sweeper_interval, s.load_timeout, s.queue_timeout) == (12605, 2700, 90, 12)


def test_bad_value_is_one_line_naming_variable_value_and_form(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TALKIES_MODEL_TTL", "soon")
    with pytest.raises(ConfigError) as info:
        load_settings()
    message = info.value.message
    assert "\n" not in message
    assert "TALKIES_MODEL_TTL='soon'" in message
    assert "3h30m5s" in message


@pytest.mark.parametrize(
    ("var", "value", "fragment"),
    [
        ("TALKIES_PORT", "eighty", "TALKIES_PORT='eighty'"),
        ("TALKIES_PORT", "70000", "less than or equal to 65535"),
        ("TALKIES_DEVICE", "tpu", "auto, cpu, cuda or cuda:N"),
        ("TALKIES_LOG_LEVEL", "loud", "TALKIES_LOG_LEVEL"),
        ("TALKIES_MAX_LOADED_MODELS", "0", "greater than or equal to 1"),
        ("TALKIES_VAD_THRESHOLD", "2", "TALKIES_VAD_THRESHOLD"),
        ("TALKIES_BLOCK_PRIVATE_DOWNLOADS", "maybe", "TALKIES_BLOCK_PRIVATE_DOWNLOADS"),
        ("TALKIES_ENGINE_ISOLATION", "thread", "'process' or 'inprocess'"),
        ("TALKIES_MEMORY_BUDGET", "lots", "TALKIES_MEMORY_BUDGET='lots' is invalid: expected bytes (8G"),
        ("TALKIES_MEMORY_BUDGET", "150%", "at most 100"),
        ("TALKIES_SWAP_MAX_WAIT", "soon", "TALKIES_SWAP_MAX_WAIT"),
    ],
)
def test_bad_values(monkeypatch: pytest.MonkeyPatch, var: str, value: str, fragment: str) -> None:
    monkeypatch.setenv(var, value)
    with pytest.raises(ConfigError, match=fragment.replace("(", r"\(")):
        load_settings()


@pytest.mark.parametrize(
    ("value", "size", "share"),
    [
        ("8G", 8 << 30, None),
        ("512M", 512 << 20, None),
        ("1.5GiB", 3 << 29, None),
        ("2000", 2000, None),
        ("60%", None, 0.6),
        ("", None, None),
    ],
)
def test_memory_budget_forms(value: str, size: int | None, share: float | None) -> None:
    assert parse_budget(value) == (size, share)
    assert load_settings(memory_budget=value).memory_budget == value


def test_lists_and_tokens(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TALKIES_ENABLED_MODELS", " b, a ,,c")
    monkeypatch.setenv("TALKIES_PRELOAD", "a")
    monkeypatch.setenv("TALKIES_AUTH_TOKEN", "tok-alpha, tok-beta")
    monkeypatch.setenv("TALKIES_CORS_ORIGINS", "*")
    s = load_settings()
    assert s.enabled_models == ("b", "a", "c")
    assert s.preload == ("a",)
    assert s.auth_tokens == ("tok-alpha", "tok-beta")
    assert s.cors_origins == ("*",)
    assert "tok-alpha" not in repr(s)  # the token is a secret


def test_defaults_work_for_a_non_root_user(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.delenv("XDG_DATA_HOME", raising=False)
    s = load_settings()
    assert s.data_dir == tmp_path / ".local" / "share" / "talkies"
    assert default_data_dir() == s.data_dir
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "xdg"))
    assert load_settings().data_dir == tmp_path / "xdg" / "talkies"
    assert s.max_loaded_models == 8
    assert s.memory_budget == ""
    assert s.auth_tokens == ()
