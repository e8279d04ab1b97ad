"""The proxy to a `process` model drops hop-by-hop headers both ways, those named in `Connection`
included, and the request id is ours alone: a real outer talkies, a real script server behind it."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from tests.process.conftest import script_model

pytestmark = pytest.mark.slow


def test_connection_listed_headers_are_dropped_both_ways_and_one_request_id(outer: Any) -> None:
    with outer({"speaker": script_model()}) as url, httpx.Client(base_url=url, timeout=60) as client:
        answer = client.get(
            "/v1/audio/voices",
            params={"model": "speaker"},
            headers={
                "Connection": "keep-alive, X-Client-Hop",
                "X-Client-Hop": "for the first hop only",
                "X-End-To-End": "kept",
                "X-Request-ID": "not a safe id!",  # refused as ours: talkies makes its own
            },
        )
    assert answer.status_code == 200, answer.text
    received = answer.json()["headers"]
    names = [name for name, _ in received]
    assert "x-client-hop" not in names
    assert ["x-end-to-end", "kept"] in received
    ours = answer.headers.get_list("x-request-id")
    assert len(ours) == 1
    assert ours[0] != "upstream-id"
    assert [value for name, value in received if name == "x-request-id"] == ours  # the server saw ours alone
    assert "x-upstream-hop" not in answer.headers  # named in the server's Connection header
    assert answer.headers["x-upstream-kept"] == "kept"
