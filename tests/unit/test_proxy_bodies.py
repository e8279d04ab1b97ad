from __future__ import annotations

import httpx
import pytest

from talkies.api.proxy_bodies import (
    FormModelFinder,
    form_boundary,
    json_model_span,
    replace_form_model,
    replace_json_model,
)


def encoded_form(fields: list[tuple[str, object]]) -> tuple[bytes, bytes]:
    request = httpx.Request("POST", "http://x/", files=fields)
    boundary = form_boundary(request.headers["content-type"])
    assert boundary is not None
    return request.read(), boundary


@pytest.mark.parametrize("chunk", [1, 7, 64, 100_000])
def test_finder_reads_the_model_whatever_the_chunking(chunk: int) -> None:
    body, boundary = encoded_form(
        [("file", ("a.wav", b"x" * 5000, "audio/wav")), ("model", (None, "whisper"))]
    )
    finder = FormModelFinder(boundary)
    seen = 0
    for start in range(0, len(body), chunk):
        seen = start + chunk
        if finder.feed(body[start : start + chunk]):
            break
    assert finder.model == "whisper"
    assert seen >= body.index(b"whisper") + len("whisper")  # known only once its field ended


def test_replace_form_model_changes_that_value_only() -> None:
    body, boundary = encoded_form(
        [
            ("language", (None, "en")),
            ("model", (None, "mine")),
            ("file", ("m.wav", b"model mine", "audio/wav")),
        ]
    )
    rewritten = replace_form_model(body, boundary, b"mine", b"whisper-1")
    assert rewritten is not None
    assert rewritten == body.replace(b"\r\n\r\nmine\r\n", b"\r\n\r\nwhisper-1\r\n", 1)
    assert rewritten.endswith(b"model mine\r\n--" + boundary + b"--\r\n")  # the file part is untouched
    assert replace_form_model(body, boundary, b"other", b"x") is None


def test_a_file_named_model_is_not_the_model_field() -> None:
    body, boundary = encoded_form(
        [("model", ("model.txt", b"not me", "text/plain")), ("model", (None, "me"))]
    )
    finder = FormModelFinder(boundary)
    finder.feed(body)
    assert finder.model == "me"


def test_json_model_span() -> None:
    body = b'{"input": "say \\"model\\"", "nested": {"model": "no"},\n "model" :"m\xc3\xa9", "speed": 1e0}'
    span = json_model_span(body)
    assert span is not None
    assert span[0] == "m\u00e9"
    assert replace_json_model(body, span, "tts-1") == body.replace(b'"m\xc3\xa9"', b'"tts-1"')
    assert json_model_span(b'["model"]') is None
    assert json_model_span(b'{"model": 3}') is None
    assert json_model_span(b'{"model": "a"') is None
