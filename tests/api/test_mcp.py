"""/v1/mcp through the official `mcp` client over Streamable HTTP against a real uvicorn server."""

from __future__ import annotations

import base64
import json
import sys
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

import httpx
import httpx2
import pytest
from mcp import ClientSession
from mcp.client.streamable_http import streamable_http_client

from talkies.api.app import create_app
from talkies.settings import Settings
from tests.server import asgi_client, serve

pytestmark = pytest.mark.anyio
TOKEN = "mcp-s3cret"


@pytest.fixture
def server(make_settings: Callable[..., Settings]) -> Iterator[str]:
    with serve(create_app(make_settings(max_upload_bytes=64 * 1024))) as base:
        yield base


async def _session(url: str, headers: dict[str, str] | None = None) -> AsyncIterator[ClientSession]:
    async with (
        httpx2.AsyncClient(headers=headers, timeout=httpx2.Timeout(30, read=300)) as http,
        streamable_http_client(url, http_client=http) as (read, write),
        ClientSession(read, write) as session,
    ):
        await session.initialize()
        yield session


def _payload(result: Any) -> Any:
    assert not result.is_error, result.content
    return json.loads(result.content[0].text)


async def test_initialize_list_tools_and_files(server: str) -> None:
    async for session in _session(f"{server}/v1/mcp"):
        names = {tool.name for tool in (await session.list_tools()).tools}
        assert names == {
            "list_models",
            "transcribe",
            "list_files",
            "put_file",
            "get_file",
            "delete_file",
            "speak",
            "list_voices",
        }
        data = bytes(range(256)) * 4
        put = _payload(
            await session.call_tool(
                "put_file", {"path": "mcp/clip.bin", "content_base64": base64.b64encode(data).decode()}
            )
        )
        assert put == {"path": "mcp/clip.bin", "size": 1024}
        listing = _payload(await session.call_tool("list_files", {}))
        assert [f["path"] for f in listing["files"]] == ["mcp/clip.bin"]
        got = _payload(await session.call_tool("get_file", {"path": "mcp/clip.bin"}))
        assert base64.b64decode(got["content_base64"]) == data
        assert got["content_type"] == "application/octet-stream"
        assert _payload(await session.call_tool("delete_file", {"path": "mcp/clip.bin"}))["deleted"] is True
        missing = await session.call_tool("get_file", {"path": "mcp/clip.bin"})
        assert missing.is_error
        assert "not found" in missing.content[0].text
        for name in ("../escape", "/mcp/clip.bin", "~/.ssh/x", ".hidden"):
            hostile = await session.call_tool("put_file", {"path": name, "content_base64": "eA=="})
            assert hostile.is_error
            assert "invalid path" in hostile.content[0].text
        too_big = await session.call_tool(
            "put_file",
            {"path": "big.bin", "content_base64": base64.b64encode(b"x" * (64 * 1024 + 1)).decode()},
        )
        assert too_big.is_error
        assert "TALKIES_MAX_UPLOAD_BYTES" in too_big.content[0].text
        bad = await session.call_tool("put_file", {"path": "x.bin", "content_base64": "not base64!"})
        assert bad.is_error
        assert "not valid base64" in bad.content[0].text
        wrapped = base64.encodebytes(data).decode()  # MIME-style, a newline every 76 characters
        assert _payload(await session.call_tool("put_file", {"path": "w.bin", "content_base64": wrapped}))[
            "size"
        ] == len(data)
        models = _payload(await session.call_tool("list_models", {}))["models"]
        assert {m["modality"] for m in models} == {"asr", "tts"}
        assert all(m["loaded"] is False for m in models)


async def test_bare_path_answers_without_redirect(server: str) -> None:
    body = {
        "jsonrpc": "2.0",
        "id": 1,
        "method": "initialize",
        "params": {
            "protocolVersion": "2025-06-18",
            "capabilities": {},
            "clientInfo": {"name": "t", "version": "1"},
        },
    }
    headers = {"Accept": "application/json, text/event-stream"}
    async with httpx.AsyncClient() as http:
        response = await http.post(f"{server}/v1/mcp", json=body, headers=headers)
    assert response.status_code == 200
    assert response.json()["result"]["serverInfo"]["name"] == "talkies"


async def test_auth_is_required(make_settings: Callable[..., Settings]) -> None:
    with serve(create_app(make_settings(auth_token=TOKEN))) as base:
        async with httpx.AsyncClient() as http:
            refused = await http.post(f"{base}/v1/mcp", json={"jsonrpc": "2.0", "id": 1, "method": "ping"})
        assert refused.status_code == 401
        assert refused.headers["www-authenticate"] == "Bearer"
        async for session in _session(f"{base}/v1/mcp", headers={"Authorization": f"Bearer {TOKEN}"}):
            assert len((await session.list_tools()).tools) == 8


async def test_without_the_mcp_extra_the_app_still_starts(
    make_settings: Callable[..., Settings], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "mcp.server.mcpserver", None)  # as if `mcp` were not installed
    app = create_app(make_settings())
    async with asgi_client(app) as http:
        assert (await http.post("/v1/mcp", json={})).status_code == 404
        assert (await http.get("/v1/files")).status_code == 200
