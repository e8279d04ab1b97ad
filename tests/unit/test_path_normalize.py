from __future__ import annotations

import pytest

from talkies.api.middleware import normalize_path


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        ("/v1/v1/audio/models", "/v1/audio/models"),
        ("/v1/v1/v1/audio/speech", "/v1/audio/speech"),
        ("//v1/audio/voices", "/v1/audio/voices"),
        ("/v1//audio/transcriptions", "/v1/audio/transcriptions"),
        ("/v1/audio/speech", "/v1/audio/speech"),
        ("/v1/files/a//b.wav", "/v1/files/a//b.wav"),  # past the prefix: the route judges it
        ("/healthz", "/healthz"),
        ("/", "/"),
    ],
)
def test_only_the_prefix_is_normalized(given: str, expected: str) -> None:
    assert normalize_path(given) == expected
