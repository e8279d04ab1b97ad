"""/v1/files over HTTP: round trip, limits, hostile paths, aborted uploads, auth."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI

from talkies.api.app import create_app
from talkies.settings import Settings

pytestmark = pytest.mark.anyio


@pytest.fixture
async def app(make_settings: Callable[..., Settings]) -> AsyncIterator[FastAPI]:
    application = create_app(make_settings(max_upload_bytes=4096))
    async with application.router.lifespan_context(application):
        yield application


@pytest.fixture
async def client(app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://localhost") as http:
        yield http


def files_root(app: FastAPI) -> Path:
    return Path(app.state.files.root)


async def test_roundtrip(client: httpx.AsyncClient, app: FastAPI) -> None:
    # `/v1/files//x` carries the path "/x": an empty first segment, refused by the staging-name rule.
    leading = await client.put("/v1/files//lectures/2026/talk.mp3", content=b"ID3")
    assert leading.status_code == 400
    assert "leading '/'" in leading.json()["detail"]
    put = await client.put("/v1/files/lectures/2026/talk.mp3", content=b"ID3" + b"\x00" * 100)
    assert put.status_code == 201
    assert put.json() == {"path": "lectures/2026/talk.mp3", "size": 103}
    listing = (await client.get("/v1/files")).json()["files"]
    assert [(f["path"], f["size"]) for f in listing] == [("lectures/2026/talk.mp3", 103)]
    got = await client.get("/v1/files/lectures/2026/talk.mp3")
    assert got.status_code == 200
    assert got.headers["content-type"] == "audio/mpeg"
    assert got.content == b"ID3" + b"\x00" * 100
    assert (await client.delete("/v1/files/lectures/2026/talk.mp3")).status_code == 200
    assert list(files_root(app).iterdir()) == []
    missing = await client.get("/v1/files/lectures/2026/talk.mp3")
    assert missing.status_code == 404
    assert "not found" in missing.json()["detail"]
    assert (await client.delete("/v1/files/lectures/2026/talk.mp3")).status_code == 404


async def test_upload_cap_declared_and_streamed(client: httpx.AsyncClient, app: FastAPI) -> None:
    declared = await client.put("/v1/files/big.bin", content=b"x" * 5000)
    assert declared.status_code == 413

    async def chunked() -> AsyncIterator[bytes]:  # no Content-Length: the streamed count must catch it
        for _ in range(10):
            yield b"x" * 1000

    streamed = await client.put("/v1/files/big.bin", content=chunked())
    assert streamed.status_code == 413
    assert "TALKIES_MAX_UPLOAD_BYTES" in declared.json()["detail"]
    assert "TALKIES_MAX_UPLOAD_BYTES" in streamed.json()["detail"]
    assert list(files_root(app).iterdir()) == []


async def test_413_stops_reading_the_body(app: FastAPI) -> None:
    body = [{"type": "http.request", "body": b"x" * 1000, "more_body": True} for _ in range(100)]
    assert await _call(app, "PUT", b"/v1/files/big.bin", body) == 413
    assert len(body) >= 94  # refused at the 5th KB of a 100 KB body (cap 4096)
    assert list(files_root(app).iterdir()) == []


async def test_symlink_is_404(client: httpx.AsyncClient, app: FastAPI, tmp_path: Path) -> None:
    secret = tmp_path / "secret.txt"
    secret.write_text("secret")
    os.symlink(secret, files_root(app) / "link.txt")
    assert (await client.get("/v1/files/link.txt")).status_code == 404
    assert (await client.delete("/v1/files/link.txt")).status_code == 404
    assert secret.exists()


async def _call(
    app: FastAPI,
    method: str,
    raw_path: bytes,
    messages: list[dict[str, Any]],
    fail_with: Exception | None = None,
    path: str | None = None,
) -> int:
    """Drive the ASGI app directly: a raw, un-normalised path and a scripted body. Once the script is
    spent, `receive` raises `fail_with` (a broken transport) or reports a client disconnect. Messages are
    consumed from `messages` itself, so a caller can see how much of the body was read. `path`: the
    decoded path a server would give with `raw_path` (default: the raw bytes as they are)."""
    script = messages
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        if script:
            return script.pop(0)
        if fail_with is not None:
            raise fail_with
        return {"type": "http.disconnect"}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": method,
        "scheme": "http",
        "path": raw_path.decode("latin-1") if path is None else path,
        "raw_path": raw_path,
        "query_string": b"",
        "root_path": "",
        "headers": [(b"host", b"localhost")],
        "client": ("127.0.0.1", 1),
        "server": ("talkies", 80),
        "state": {},
    }
    try:
        await app(scope, receive, send)
    except Exception:
        return 500
    starts = [m for m in sent if m["type"] == "http.response.start"]
    return int(starts[0]["status"]) if starts else 0


@pytest.mark.parametrize(
    "raw_path",
    [
        b"/v1/files/../etc/passwd",
        b"/v1/files/a/./b.wav",
        b"/v1/files/a\\b.wav",
        b"/v1/files/a//b.wav",
        b"/v1/files/a/..",
        b"/v1/files/x\x00.wav",
    ],
)
async def test_hostile_raw_paths_are_400(app: FastAPI, raw_path: bytes) -> None:
    body = [{"type": "http.request", "body": b"data", "more_body": False}]
    assert await _call(app, "PUT", raw_path, body) == 400
    assert await _call(app, "GET", raw_path, []) == 400
    assert await _call(app, "DELETE", raw_path, []) == 400
    assert list(files_root(app).iterdir()) == []


async def test_staging_name_comes_after_the_routes_own_prefix(app: FastAPI) -> None:
    """`PUT /v1/%66iles/a/v1/files/b` names `a/v1/files/b`: the name is what follows the prefix the route
    matched, not whatever follows the first `/v1/files/` anywhere in the raw path."""
    raw, decoded = b"/v1/%66iles/a/v1/files/b", "/v1/files/a/v1/files/b"
    body = [{"type": "http.request", "body": b"data", "more_body": False}]
    assert await _call(app, "PUT", raw, body, path=decoded) == 201
    stored = sorted(str(p.relative_to(files_root(app))) for p in files_root(app).rglob("*") if p.is_file())
    assert stored == ["a/v1/files/b"]
    assert await _call(app, "GET", raw, [], path=decoded) == 200
    assert await _call(app, "DELETE", raw, [], path=decoded) == 200
    assert not (files_root(app) / "a").exists()


async def test_client_disconnect_mid_upload_leaves_nothing(app: FastAPI) -> None:
    messages = [
        {"type": "http.request", "body": b"a" * 1000, "more_body": True},
        {"type": "http.request", "body": b"b" * 1000, "more_body": True},
        {"type": "http.disconnect"},
    ]
    assert await _call(app, "PUT", b"/v1/files/deep/dir/clip.wav", messages) == 499
    assert list(files_root(app).rglob("*")) == []


async def test_failing_receive_mid_upload_leaves_nothing(app: FastAPI) -> None:
    assert await _call(app, "PUT", b"/v1/files/keep.wav", [{"type": "http.request", "body": b"old"}]) == 201
    partial = [{"type": "http.request", "body": b"a" * 1000, "more_body": True}]
    status = await _call(app, "PUT", b"/v1/files/keep.wav", partial, fail_with=ConnectionResetError("broke"))
    assert status == 500
    status = await _call(app, "PUT", b"/v1/files/new/dir/x.wav", partial, fail_with=ConnectionResetError("x"))
    assert status == 500
    assert sorted(p.name for p in files_root(app).rglob("*")) == ["keep.wav"]
    assert (files_root(app) / "keep.wav").read_bytes() == b"old"


async def test_auth_required(make_settings: Callable[..., Settings]) -> None:
    application = create_app(make_settings(auth_token="s3cret"))
    async with application.router.lifespan_context(application):
        transport = httpx.ASGITransport(app=application)
        async with httpx.AsyncClient(transport=transport, base_url="http://localhost") as http:
            assert (await http.get("/v1/files")).status_code == 401
            assert (await http.put("/v1/files/a.txt", content=b"x")).status_code == 401
            ok = await http.put("/v1/files/a.txt", content=b"x", headers={"Authorization": "Bearer s3cret"})
            assert ok.status_code == 201
