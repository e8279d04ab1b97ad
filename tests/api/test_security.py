"""Issue 10's guards end to end: the URL cache is unreachable through /v1/files, Host / Origin checks (the app
and the MCP transport), the staging-name rule over HTTP, truncated and abandoned uploads, the speech input
limit, /dev/shm running short, and start-up cleanup."""

from __future__ import annotations

import json
import logging
import socket
import threading
import time
from collections import Counter
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest

from talkies.api.app import create_app
from talkies.api.mcp import McpEndpoint, _Tools
from talkies.errors import TalkiesError
from talkies.netpolicy import HostPolicy
from talkies.services.downloads import cache_name
from tests.api.audio_helpers import SENTENCE_A, speak, weightfree_settings, word_overlap, write_wav
from tests.api.test_files_api import _call
from tests.server import asgi_client, serve

pytestmark = [pytest.mark.anyio, pytest.mark.pinned_isolation]
SECRET = b"TOP-SECRET internal document " * 20
MODEL = "pocketsphinx-en-us"


class _Origin(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _OriginHandler)
        self.hits: Counter[str] = Counter()

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"


class _OriginHandler(BaseHTTPRequestHandler):
    server: _Origin

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def do_GET(self) -> None:
        self.server.hits[self.path] += 1
        self.send_response(200)
        self.send_header("Content-Length", str(len(SECRET)))
        self.end_headers()
        self.wfile.write(SECRET)


@pytest.fixture
def origin() -> Iterator[_Origin]:
    srv = _Origin()
    thread = threading.Thread(target=srv.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    yield srv
    srv.shutdown()
    srv.server_close()
    thread.join(5)


def _dir(path: Path) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    return path


def _transcribe_url(url: str) -> dict[str, Any]:
    return {"data": {"model": MODEL, "file_path": url}, "files": {"x": ("", b"")}}


# --- 1. the URL cache is outside the staging namespace --------------------------------------------------


async def test_a_fetched_url_cannot_be_read_listed_overwritten_or_deleted_through_files(
    tmp_path: Path, origin: _Origin
) -> None:
    settings = weightfree_settings(tmp_path, block_private_downloads=False)  # the guard off: it is fetched
    app = create_app(settings)
    url = f"{origin.base}/secret.wav"
    name = cache_name(url)
    async with asgi_client(app) as http:
        first = await http.post("/v1/audio/transcriptions", **_transcribe_url(url))
        assert first.status_code == 400  # not audio, but the body was fetched and cached
        cached = settings.url_cache_dir / name
        assert cached.read_bytes() == SECRET

        candidates = [
            f"downloads/{name}",
            name,
            f"cache/urls/{name}",
            f"urls/{name}",
            f"files/downloads/{name}",
            f"../cache/urls/{name}",
            f"..%2Fcache%2Furls%2F{name}",
            f"%2E%2E/cache/urls/{name}",
            f"/{name}",
            f"downloads/{name}.part",
        ]
        for candidate in candidates:
            got = await http.get(f"/v1/files/{candidate}")
            assert got.status_code in (400, 404), (candidate, got.status_code)
            assert SECRET[:20] not in got.content
            for path in candidates:
                raw = f"/v1/files/{path}".encode()
                assert await _call(app, "GET", raw, []) in (400, 404)
        listing = (await http.get("/v1/files")).json()["files"]
        assert listing == []
        tools = _Tools(app)
        for candidate in candidates:
            with pytest.raises(TalkiesError):
                await tools.get_file(candidate)
        assert (await tools.list_files()) == {"files": []}

        # Writing a staged file under every name the cache could have does not touch the cache...
        for candidate in (f"downloads/{name}", name):
            put = await http.put(f"/v1/files/{candidate}", content=b"POISON")
            assert put.status_code == 201
        assert cached.read_bytes() == SECRET
        again = await http.post("/v1/audio/transcriptions", **_transcribe_url(url))
        assert again.status_code == 400
        assert origin.hits["/secret.wav"] == 1  # the cache answered, with the real body
        assert cached.read_bytes() == SECRET

        # ...and deleting them deletes only the staged files.
        for candidate in (f"downloads/{name}", name):
            assert (await http.delete(f"/v1/files/{candidate}")).status_code == 200
            assert (await http.delete(f"/v1/files/{candidate}")).status_code == 404
        assert cached.read_bytes() == SECRET
        assert not settings.files_dir.joinpath("downloads").exists()


async def test_an_old_url_cache_inside_the_staging_area_is_removed_at_start(tmp_path: Path) -> None:
    settings = weightfree_settings(tmp_path)
    legacy = settings.files_dir / "downloads"
    legacy.mkdir(parents=True)
    (legacy / "0123456789abcdef-secret.wav").write_bytes(SECRET)
    (legacy / "my-own-upload.wav").write_bytes(b"mine")
    async with asgi_client(create_app(settings)) as http:
        listing = (await http.get("/v1/files")).json()["files"]
    assert [f["path"] for f in listing] == ["downloads/my-own-upload.wav"]


# --- 2. private addresses refused by default; the allowlist opens them -----------------------------------


async def test_default_settings_refuse_a_loopback_url_and_the_allowlist_accepts_it(
    tmp_path: Path, origin: _Origin
) -> None:
    url = f"{origin.base}/secret.wav"
    async with asgi_client(create_app(weightfree_settings(_dir(tmp_path / "a")))) as http:
        refused = await http.post("/v1/audio/transcriptions", **_transcribe_url(url))
    assert refused.status_code == 400
    assert "TALKIES_URL_ALLOWLIST" in refused.json()["detail"]
    assert origin.hits["/secret.wav"] == 0
    allowed = weightfree_settings(_dir(tmp_path / "b"), url_allowlist="192.168.0.0/16,127.0.0.1")
    async with asgi_client(create_app(allowed)) as http:
        fetched = await http.post("/v1/audio/transcriptions", **_transcribe_url(url))
    assert fetched.status_code == 400  # fetched, then refused as undecodable audio
    assert "TALKIES_URL_ALLOWLIST" not in fetched.json()["detail"]
    assert origin.hits["/secret.wav"] == 1


# --- 3. Host and Origin ------------------------------------------------------------------------------------


def test_a_foreign_host_is_refused_by_a_loopback_bound_server(tmp_path: Path) -> None:
    app = create_app(weightfree_settings(tmp_path))
    with serve(app) as base, httpx.Client(base_url=base, timeout=30) as http:
        port = urlsplit(base).port
        evil = http.get("/v1/models", headers={"Host": "evil.example"})
        assert evil.status_code == 421
        assert "TALKIES_ALLOWED_HOSTS" in evil.json()["detail"]
        rebound = http.get("/v1/files", headers={"Host": f"evil.example:{port}"})
        assert rebound.status_code == 421
        mcp = http.post(
            "/v1/mcp",
            headers={"Host": "evil.example", "Accept": "application/json, text/event-stream"},
            json={"jsonrpc": "2.0", "id": 1, "method": "tools/list"},
        )
        assert mcp.status_code == 421
        for host in (f"localhost:{port}", f"127.0.0.1:{port}", f"[::1]:{port}", "LOCALHOST"):
            assert http.get("/v1/models", headers={"Host": host}).status_code == 200, host
        assert http.get("/healthz", headers={"Host": "10.1.2.3:8000"}).status_code == 200  # probes


async def test_the_mcp_transport_checks_hosts_itself(tmp_path: Path) -> None:
    """The SDK's DNS-rebinding protection is on with the app's list, even without the app's guard in front."""
    app = create_app(weightfree_settings(tmp_path))
    endpoint = next(r for r in app.router.routes if getattr(r, "path", None) == "/v1/mcp").endpoint  # type: ignore[attr-defined]
    assert isinstance(endpoint, McpEndpoint)
    assert endpoint.security.enable_dns_rebinding_protection
    assert "localhost:*" in endpoint.security.allowed_hosts
    body = json.dumps({"jsonrpc": "2.0", "id": 1, "method": "tools/list"}).encode()
    async with app.router.lifespan_context(app):
        for host, expected in ((b"evil.example", 421), (b"localhost:8000", 200)):
            sent: list[dict[str, Any]] = []
            messages = [{"type": "http.request", "body": body, "more_body": False}]

            async def receive(messages: list[dict[str, Any]] = messages) -> dict[str, Any]:
                return messages.pop(0) if messages else {"type": "http.disconnect"}

            async def send(message: dict[str, Any], sent: list[dict[str, Any]] = sent) -> None:
                sent.append(message)

            scope = {
                "type": "http",
                "asgi": {"version": "3.0"},
                "http_version": "1.1",
                "method": "POST",
                "scheme": "http",
                "path": "/v1/mcp",
                "raw_path": b"/v1/mcp",
                "query_string": b"",
                "root_path": "",
                "headers": [
                    (b"host", host),
                    (b"content-type", b"application/json"),
                    (b"accept", b"application/json, text/event-stream"),
                ],
                "client": ("127.0.0.1", 1),
                "server": ("127.0.0.1", 8000),
                "state": {},
            }
            await endpoint(scope, receive, send)  # straight to the transport: no app middleware
            assert sent[0]["status"] == expected, host


async def test_allowed_hosts_setting_and_routable_binds(tmp_path: Path) -> None:
    listed = weightfree_settings(_dir(tmp_path / "a"), allowed_hosts="speech.lan")
    async with asgi_client(create_app(listed)) as http:
        assert (await http.get("/v1/models", headers={"Host": "speech.lan:8000"})).status_code == 200
        assert (await http.get("/v1/models", headers={"Host": "evil.example"})).status_code == 421
    token = weightfree_settings(_dir(tmp_path / "b"), host="0.0.0.0", auth_token="t0k")
    async with asgi_client(create_app(token)) as http:
        got = await http.get(
            "/v1/models", headers={"Host": "anything.example", "Authorization": "Bearer t0k"}
        )
        assert got.status_code == 200
    open_lan = weightfree_settings(_dir(tmp_path / "c"), host="0.0.0.0")
    async with asgi_client(create_app(open_lan)) as http:
        assert (await http.get("/v1/models", headers={"Host": "evil.example"})).status_code == 421
        assert (await http.get("/v1/models", headers={"Host": "127.0.0.1:8000"})).status_code == 200


def test_host_policy_defaults() -> None:
    loopback = HostPolicy.build((), bind="127.0.0.1", has_token=False)
    assert loopback.allows("localhost:8000")
    assert loopback.allows("[::1]:8000")
    assert loopback.allows(None)
    assert not loopback.allows("evil.example")
    assert not loopback.allows("localhost.evil.example")
    assert not HostPolicy.build((), bind="127.0.0.1", has_token=True).allows("evil.example")
    assert HostPolicy.build((), bind="0.0.0.0", has_token=True).allows("evil.example")
    specific = HostPolicy.build((), bind="192.168.1.5", has_token=False)
    assert specific.allows("192.168.1.5:8000")
    assert not specific.allows("192.168.1.6")
    assert HostPolicy.build(("*",), bind="127.0.0.1", has_token=False).allows("evil.example")


async def test_browser_origins_may_not_change_state_unless_allowed(tmp_path: Path) -> None:
    settings = weightfree_settings(tmp_path, cors_origins="http://app.example")
    async with asgi_client(create_app(settings)) as http:
        evil = {"Origin": "http://evil.example"}
        put = await http.put("/v1/files/a.wav", content=b"x", headers=evil)
        assert put.status_code == 403
        assert "TALKIES_CORS_ORIGINS" in put.json()["detail"]
        speech = await http.post("/v1/audio/speech", json={"model": "espeak-ng", "input": "hi"}, headers=evil)
        assert speech.status_code == 403
        assert (await http.delete("/v1/files/a.wav", headers={"Origin": "null"})).status_code == 403
        assert not settings.files_dir.joinpath("a.wav").exists()
        assert (await http.get("/v1/models", headers=evil)).status_code == 200  # reading is CORS's business
        for allowed in ("http://app.example", "http://localhost"):  # listed, and the server's own origin
            ok = await http.put("/v1/files/a.wav", content=b"x", headers={"Origin": allowed})
            assert ok.status_code == 201, allowed


# --- 4. the staging-name rule over HTTP ----------------------------------------------------------------

HOSTILE_NAMES: list[bytes] = [
    b"~/.ssh/authorized_keys",
    b"~root",
    b"a/~b.wav",
    b"..;/x",
    b"/x.wav",  # a leading '/'
    b"%2Fx.wav",
    b"%c0%ae%c0%ae/x",  # overlong UTF-8 for '..'
    b"%c0%afx.wav",  # overlong '/'
    b"%ff%fe.wav",
    b"a/%ed%a0%80.wav",  # an encoded UTF-16 surrogate
    b"../etc/passwd",
    b"a/../../x",
    b"%2e%2e/x",
    b"a%2F..%2Fx",
    b".",
    b"..",
    b".hidden",
    b"a/.git/config",
    b"a//b.wav",
    b"a/b/",
    b"",
    b"a%5cb.wav",
    b"..%5csecret",
    b"x%00.wav",
    b"x%0a.wav",
    b"x%0d%0aSet-Cookie:a.wav",
    b"x%1b%5b31m.wav",
    b"x%7f.wav",
    b"x%c2%85.wav",
    b"x%e2%80%a8.wav",
    b"clip.wav.part",
    b"/".join([b"d"] * 17),
    b"x" * 256,
    b"/".join([b"y" * 200] * 6),
]


@pytest.mark.parametrize("name", HOSTILE_NAMES)
async def test_each_hostile_name_is_400_and_creates_nothing(tmp_path: Path, name: bytes) -> None:
    app = create_app(weightfree_settings(tmp_path, max_upload_bytes=4096))
    raw = b"/v1/files/" + name
    async with app.router.lifespan_context(app):
        body = [{"type": "http.request", "body": b"data", "more_body": False}]
        assert await _call(app, "PUT", raw, body) == 400
        assert await _call(app, "GET", raw, []) == 400
        assert await _call(app, "DELETE", raw, []) == 400
        assert list(app.state.files.root.rglob("*")) == []


def _raw_request(base: str, request: bytes) -> bytes:
    url = urlsplit(base)
    with socket.create_connection((url.hostname, url.port), timeout=30) as sock:
        sock.sendall(request)
        reply = b""
        while b"\r\n\r\n" not in reply:
            chunk = sock.recv(65536)
            if not chunk:
                break
            reply += chunk
    return reply


def test_hostile_names_through_a_real_server(tmp_path: Path) -> None:
    settings = weightfree_settings(tmp_path)
    with serve(create_app(settings)) as base:
        for name in HOSTILE_NAMES:
            target = b"/v1/files/" + name
            reply = _raw_request(
                base,
                b"PUT " + target + b" HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 4\r\n"
                b"Connection: close\r\n\r\ndata",
            )
            assert reply.startswith(b"HTTP/1.1 400"), (name, reply[:200])
    assert list(settings.files_dir.rglob("*")) == []


# --- 5. multipart: truncated and abandoned bodies ------------------------------------------------------

BOUNDARY = "talkiesboundary"


def _form(*, close: bool) -> bytes:
    body = (
        (
            f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="model"\r\n\r\n{MODEL}\r\n'
            f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="file"; filename="a.wav"\r\n'
            "Content-Type: audio/wav\r\n\r\n"
        ).encode()
        + b"RIFF"
        + b"\x00" * 5000
    )
    return body + (f"\r\n--{BOUNDARY}--\r\n".encode() if close else b"")


def _tmp_files(tmp_path: Path) -> list[Path]:
    tmp = tmp_path / "data" / "tmp"
    return list(tmp.iterdir()) if tmp.exists() else []


@pytest.mark.parametrize("route", ["/v1/audio/transcriptions", "/v1/audio/translations"])
async def test_a_multipart_body_cut_before_its_closing_boundary_is_400(tmp_path: Path, route: str) -> None:
    headers = {"content-type": f"multipart/form-data; boundary={BOUNDARY}"}
    async with asgi_client(create_app(weightfree_settings(tmp_path))) as http:
        cut = await http.post(route, content=_form(close=False), headers=headers)
        whole = await http.post(route, content=_form(close=True), headers=headers)
    assert cut.status_code == 400
    assert cut.json()["detail"].startswith("incomplete upload")
    assert "incomplete upload" not in whole.json()["detail"]  # the same bytes, closed, get past the parser
    assert _tmp_files(tmp_path) == []


def test_a_client_that_drops_mid_upload_logs_one_499_line_and_leaves_no_temp_file(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    with serve(create_app(weightfree_settings(tmp_path))) as base:
        url = urlsplit(base)
        head = (
            "POST /v1/audio/transcriptions HTTP/1.1\r\nHost: 127.0.0.1\r\n"
            f"Content-Type: multipart/form-data; boundary={BOUNDARY}\r\nContent-Length: 10000000\r\n\r\n"
        ).encode()
        with socket.create_connection((url.hostname, url.port), timeout=30) as sock:
            sock.sendall(head + _form(close=False))
            deadline = time.monotonic() + 30
            while not _tmp_files(tmp_path) and time.monotonic() < deadline:
                time.sleep(0.02)
            assert _tmp_files(tmp_path), "the upload never reached its temp file"
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and not _access_lines(caplog):
            time.sleep(0.02)
    lines = _access_lines(caplog)
    assert len(lines) == 1, lines
    assert "status=499" in lines[0]
    assert [r.getMessage() for r in caplog.records if r.exc_info or r.levelno >= logging.ERROR] == []
    assert _tmp_files(tmp_path) == []


def _access_lines(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [
        r.getMessage()
        for r in caplog.records
        if r.name == "talkies.access" and "/v1/audio/transcriptions" in r.getMessage()
    ]


# --- 6. speech input limit -----------------------------------------------------------------------------


async def test_speech_input_over_the_limit_is_400(tmp_path: Path) -> None:
    async with asgi_client(create_app(weightfree_settings(_dir(tmp_path / "a")))) as http:
        long = await http.post("/v1/audio/speech", json={"model": "espeak-ng", "input": "a" * 4097})
    assert long.status_code == 400
    assert "4096" in long.json()["detail"]
    assert "TALKIES_MAX_INPUT_CHARS" in long.json()["detail"]
    async with asgi_client(create_app(weightfree_settings(_dir(tmp_path / "b"), max_input_chars=12))) as http:
        at_limit = await http.post("/v1/audio/speech", json={"model": "espeak-ng", "input": "hello world!"})
        over = await http.post("/v1/audio/speech", json={"model": "espeak-ng", "input": "hello world!!"})
    assert at_limit.status_code == 200
    assert over.status_code == 400
    assert "limit is 12" in over.json()["detail"]


# --- 7. /dev/shm short ---------------------------------------------------------------------------------


@pytest.mark.slow
async def test_a_transcription_succeeds_with_dev_shm_reported_full(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    from talkies.workers import ipc

    # at_level also lifts a logging.disable() left by a library imported earlier in this process
    caplog.set_level(logging.WARNING, logger=ipc.__name__)
    monkeypatch.setattr(ipc, "shm_free_bytes", lambda: 0)
    made: list[int] = []
    real = ipc.shared_memory.SharedMemory

    class Spy(real):  # type: ignore[misc, valid-type]
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            if kwargs.get("create"):
                made.append(kwargs.get("size", 0))
            super().__init__(*args, **kwargs)

    monkeypatch.setattr(ipc.shared_memory, "SharedMemory", Spy)
    registry = tmp_path / "process-models.json"
    registry.write_text(json.dumps({"models": {MODEL: {"executor": "pocketsphinx", "isolation": "process"}}}))
    settings = weightfree_settings(tmp_path, models_file=registry, engine_isolation="process")
    wav = write_wav(tmp_path / "a.wav", [speak(SENTENCE_A)])
    async with asgi_client(create_app(settings), timeout=120) as http:
        response = await http.post(
            "/v1/audio/transcriptions", data={"model": MODEL}, files={"file": ("a.wav", wav.read_bytes())}
        )
    assert response.status_code == 200, response.text
    assert word_overlap(SENTENCE_A, response.json()["text"]) >= 0.5
    assert made == []  # no shared-memory block was made: the audio went through the pipe
    assert any("through the pipe" in r.getMessage() for r in caplog.records)


# --- 8. start-up cleanup -------------------------------------------------------------------------------


async def test_stale_upload_temp_files_are_removed_at_start(tmp_path: Path) -> None:
    settings = weightfree_settings(tmp_path)
    settings.upload_tmp_dir.mkdir(parents=True)
    (settings.upload_tmp_dir / "upload-abc123").write_bytes(b"left by a crash")
    (settings.upload_tmp_dir / "keep.txt").write_bytes(b"not ours")
    async with asgi_client(create_app(settings)) as http:
        assert (await http.get("/healthz")).status_code == 200
    assert sorted(p.name for p in settings.upload_tmp_dir.iterdir()) == ["keep.txt"]
