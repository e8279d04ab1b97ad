"""The API fuzzed against its own OpenAPI schema (schemathesis), in-process, on the weight-free engines.

Every operation the schema lists gets a bounded number of generated requests (schema-valid ones, and
schema-violating ones where the operation takes a body or a query), sent through the ASGI app with its
lifespan running (real espeak-ng and pocketsphinx, in the server process). Each response must not be a
5xx and must match what the schema documents: its status code, its Content-Type and, for JSON, its body
and documented headers. Where that fails because the schema is incomplete, the route's `responses=`
declaration (talkies.api.responses) is what gets fixed, not this check.

Generation is derandomized (Hypothesis derives its seed from the test), so a run is reproducible; a
failure prints the request as a curl command. Not fuzzed, and why:

- `/v1/mcp` is not in the OpenAPI schema: it is the MCP SDK's streamable-HTTP transport (a JSON-RPC session
  whose GET is a standing server-sent-event stream), tested with the MCP client in test_mcp.py.
- The playground (`/`, `/ui/...`) is left out of the schema on purpose (static files); test_ui covers it.
- The Wyoming protocol is TCP, not HTTP (test_wyoming.py).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import hypothesis
import pytest
import schemathesis
from fastapi import FastAPI
from hypothesis import HealthCheck, given
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.python import asgi as schemathesis_asgi
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from talkies.api.app import create_app
from talkies.audio.encode import SPEECH_FORMATS
from talkies.formats.transcript import TRANSCRIPT_FORMATS
from tests.api.audio_helpers import speak, weightfree_settings, write_wav

pytestmark = pytest.mark.pinned_isolation

CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
    response_headers_conformance,
]
EXAMPLES = int(os.environ.get("TALKIES_FUZZ_EXAMPLES", "8"))
"""Generated requests per operation and mode; a longer, still derandomized hunt: TALKIES_FUZZ_EXAMPLES=200."""

# Each operation in the schema, and whether it is also sent requests that violate the schema (only
# meaningful where there is a body or a query to break: any string is a valid path parameter).
OPERATIONS: dict[str, bool] = {
    "GET /healthz": False,
    "GET /readyz": False,
    "GET /metrics": False,
    "GET /v1/models": False,
    "GET /v1/models/{model_id}": False,
    "GET /api/ps": False,
    "POST /api/ps/{model_id}": False,
    "DELETE /api/ps/{model_id}": False,
    "POST /unload": False,
    "POST /api/pull": True,
    "DELETE /api/models/{slug}": False,
    "POST /v1/audio/transcriptions": True,
    "POST /v1/audio/translations": True,
    "POST /v1/audio/speech": True,
    "GET /v1/audio/voices": True,
    "POST /v1/audio/voices": True,
    "DELETE /v1/audio/voices/{name}": False,
    "GET /v1/audio/models": False,
    "GET /v1/files": False,
    "PUT /v1/files/{path}": False,
    "GET /v1/files/{path}": False,
    "DELETE /v1/files/{path}": False,
}


def fuzzed_app(data: Path) -> FastAPI:
    # schemathesis sends `Host: testserver`; everything else is the default, guards included.
    return create_app(weightfree_settings(data, allowed_hosts="testserver"))


@pytest.fixture(scope="module")
def api(tmp_path_factory: pytest.TempPathFactory) -> schemathesis.BaseSchema:
    """The schema the app serves at /openapi.json (parsed once; every test sends to an app of its own)."""
    with pytest.MonkeyPatch.context() as env:  # module scope: conftest's _isolated_env has not run yet
        for key in [k for k in os.environ if k.startswith("TALKIES_") and k != "TALKIES_TEST_CACHE"]:
            env.delenv(key)
        served = fuzzed_app(tmp_path_factory.mktemp("schema")).openapi()
    return schemathesis.openapi.from_dict(served)


@pytest.fixture
def app(tmp_path: Path) -> Iterator[FastAPI]:
    """A fresh app. schemathesis runs its lifespan from the first request to the end of the test (its
    pytest plugin ends it then; so does this fixture, for a run without the plugin)."""
    try:
        yield fuzzed_app(tmp_path)
    finally:
        schemathesis_asgi.shutdown_lifespans()  # the app's own shutdown: pool closed, engines unloaded


def check(case: schemathesis.Case, app: FastAPI) -> Any:
    """Send `case` to `app` and hold the answer to the schema. The timeout is generous: a 2-core machine
    shared with other test runs can take seconds to load pocketsphinx (no wall-clock assertion here)."""
    return case.call_and_validate(app=app, checks=CHECKS, timeout=120)


def _operation(api: schemathesis.BaseSchema, label: str) -> Any:
    method, path = label.split(" ", 1)
    return api[path][method]


def test_every_operation_in_the_schema_is_fuzzed(api: schemathesis.BaseSchema) -> None:
    labels = {result.ok().label for result in api.get_all_operations()}
    assert labels == set(OPERATIONS)


@pytest.mark.parametrize("label", list(OPERATIONS))
def test_fuzzed_requests_get_documented_answers_and_no_5xx(
    api: schemathesis.BaseSchema, app: FastAPI, label: str
) -> None:
    operation = _operation(api, label)
    modes = [GenerationMode.POSITIVE] + ([GenerationMode.NEGATIVE] if OPERATIONS[label] else [])
    for mode in modes:

        @hypothesis.settings(
            max_examples=EXAMPLES,
            deadline=None,
            derandomize=True,
            database=None,
            suppress_health_check=list(HealthCheck),
            phases=[hypothesis.Phase.explicit, hypothesis.Phase.generate, hypothesis.Phase.shrink],
        )
        @given(case=operation.as_strategy(generation_mode=mode))
        def answers_as_documented(case: schemathesis.Case) -> None:
            check(case, app)

        answers_as_documented()


# The fuzzer's files are never audio, so the success bodies are checked once more with real ones.


@pytest.fixture(scope="module")
def spoken(tmp_path_factory: pytest.TempPathFactory) -> bytes:
    return write_wav(tmp_path_factory.mktemp("wav") / "a.wav", [speak("Good morning.")]).read_bytes()


def test_transcripts_match_the_schema(api: schemathesis.BaseSchema, app: FastAPI, spoken: bytes) -> None:
    operation = _operation(api, "POST /v1/audio/transcriptions")
    for response_format in TRANSCRIPT_FORMATS:
        body = {"model": "pocketsphinx-en-us", "response_format": response_format, "file": spoken}
        case = operation.Case(body=body, media_type="multipart/form-data")
        response = check(case, app)
        assert response.status_code == 200, response_format
        assert response.headers["content-type"][0].startswith(TRANSCRIPT_FORMATS[response_format])


def test_speech_matches_the_schema(api: schemathesis.BaseSchema, app: FastAPI) -> None:
    operation = _operation(api, "POST /v1/audio/speech")
    for response_format in SPEECH_FORMATS:
        body = {"model": "espeak-ng", "input": "Hello there.", "response_format": response_format}
        case = operation.Case(body=body, media_type="application/json")
        response = check(case, app)
        assert response.status_code == 200, response_format
        assert response.headers["content-type"] == [SPEECH_FORMATS[response_format]]
