"""The MCP transport's body limit follows TALKIES_MAX_UPLOAD_BYTES; over it, a tool error naming the limit.
Through the official `mcp` client against a real uvicorn server."""

from __future__ import annotations

import base64
import json
from collections.abc import AsyncIterator, Callable, Iterator

import httpx
import httpx2
import pytest
from mcp import ClientSession
from mcp.client.streamable_http import streamable_http_client

from talkies.api.app import create_app
from talkies.settings import Settings
from tests.server import serve

pytestmark = pytest.mark.anyio
MIB = 1024 * 1024
CAP = 10 * MIB


@pytest.fixture
def server(make_settings: Callable[..., Settings]) -> Iterator[str]:
    with serve(create_app(make_settings(max_upload_bytes=CAP))) as base:
        yield base


async def _session(url: str) -> AsyncIterator[ClientSession]:
    async with (
        httpx2.AsyncClient(timeout=httpx2.Timeout(60, read=300)) as http,
        streamable_http_client(url, http_client=http) as (read, write),
        ClientSession(read, write) as session,
    ):
        await session.initialize()
        yield session


def _content(size: int) -> str:
    return base64.b64encode((bytes(range(256)) * (size // 256 + 1))[:size]).decode()


async def test_put_file_under_the_cap_succeeds_and_over_it_is_a_tool_error(server: str) -> None:
    async for session in _session(f"{server}/v1/mcp"):
        stored = await session.call_tool("put_file", {"path": "six.bin", "content_base64": _content(6 * MIB)})
        assert not stored.is_error, stored.content
        assert json.loads(stored.content[0].text) == {"path": "six.bin", "size": 6 * MIB}
        # just over the cap: within the transport's limit, refused by the tool after reading the length
        over = await session.call_tool("put_file", {"path": "over.bin", "content_base64": _content(CAP + 3)})
        assert over.is_error
        assert f"TALKIES_MAX_UPLOAD_BYTES ({CAP} bytes)" in over.content[0].text
        # far over: past the transport's limit, still a tool error (not a bare 413)
        far = await session.call_tool("put_file", {"path": "far.bin", "content_base64": _content(2 * CAP)})
        assert far.is_error
        assert "MCP body limit" in far.content[0].text
        assert f"TALKIES_MAX_UPLOAD_BYTES = {CAP} bytes" in far.content[0].text
        listed = json.loads((await session.call_tool("list_files", {})).content[0].text)
        assert [f["path"] for f in listed["files"]] == ["six.bin"]


def test_a_body_past_the_drain_bound_answers_413(server: str) -> None:
    from talkies.api.mcp_limits import DRAIN_FACTOR, body_limit

    huge = b'{"jsonrpc": "2.0", "id": 1, "method": "tools/call", "params": {"name": "put_file"'
    huge += b', "arguments": {"content_base64": "' + b"A" * (DRAIN_FACTOR * body_limit(CAP) + MIB) + b'"}}}'
    headers = {"Accept": "application/json, text/event-stream", "Content-Type": "application/json"}
    response = httpx.post(f"{server}/v1/mcp", content=huge, headers=headers, timeout=120)
    assert response.status_code == 413
    assert "TALKIES_MAX_UPLOAD_BYTES" in response.json()["detail"]
