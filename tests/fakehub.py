"""A local server that speaks enough of the Hugging Face hub's API for huggingface_hub (HF_ENDPOINT points at
it): the model listing with sizes and hashes, and file downloads with Range requests. The pull tests
(tests/unit/test_pull.py, tests/api/test_pull_api.py, the playground's) run against it.

Knobs for the transfers a test needs: `stall_after` sends part of model.bin and hangs (the client is
killed meanwhile), `pause_after` sends part and waits for `resume` before the rest, `drop_after` sends
part and closes the connection (an interrupted transfer), `fail_listing` answers the listing with a 500.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import random
import threading
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

REPO = "acme/tiny-whisper"
COMMIT = "0123456789abcdef0123456789abcdef01234567"
BIG = 8 * 1024 * 1024


@dataclass
class FakeHub:
    files: dict[str, bytes]
    listed_sha: dict[str, str] = field(default_factory=dict)  # overrides the SHA-256 the API reports
    stall_after: int | None = None  # GET of model.bin sends this many bytes, then hangs
    pause_after: int | None = None  # GET of model.bin sends this many bytes, then waits for `resume`
    drop_after: int | None = None  # GET of model.bin sends this many bytes, then closes the connection
    fail_listing: bool = False
    sent: dict[str, int] = field(default_factory=dict)
    gets: Counter[str] = field(default_factory=Counter)  # GETs per file
    ranges: list[str] = field(default_factory=list)
    release: threading.Event = field(default_factory=threading.Event)
    resume: threading.Event = field(default_factory=threading.Event)
    paused: threading.Event = field(default_factory=threading.Event)  # set once model.bin's GET waits
    url: str = ""

    def info(self) -> dict[str, Any]:
        siblings = []
        for name, body in self.files.items():
            sha = self.listed_sha.get(name, hashlib.sha256(body).hexdigest())
            entry: dict[str, Any] = {"rfilename": name, "size": len(body), "blobId": sha[:40]}
            if name.endswith(".bin"):
                entry["lfs"] = {"size": len(body), "sha256": sha, "pointerSize": 134}
            siblings.append(entry)
        return {"id": REPO, "modelId": REPO, "sha": COMMIT, "private": False, "siblings": siblings}


def _handler(hub: FakeHub) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args: object) -> None:
            pass

        def _file(self) -> tuple[str, bytes] | None:
            prefix = f"/{REPO}/resolve/"
            if not self.path.startswith(prefix):
                return None
            name = self.path[len(prefix) :].split("/", 1)[1].split("?")[0]
            body = hub.files.get(name)
            return (name, body) if body is not None else None

        def _headers(self, name: str, body: bytes, status: int, length: int) -> None:
            self.send_response(status)
            self.send_header("X-Repo-Commit", COMMIT)
            self.send_header("ETag", f'"{hashlib.sha1(body).hexdigest()}"')
            self.send_header("Content-Length", str(length))
            self.send_header("Accept-Ranges", "bytes")
            self.send_header("Content-Type", "application/octet-stream")

        def _empty(self, status: int) -> None:
            self.send_response(status)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def do_HEAD(self) -> None:
            found = self._file()
            if found is None:
                self._empty(404)
                return
            name, body = found
            self._headers(name, body, 200, len(body))
            self.end_headers()

        def do_GET(self) -> None:
            if self.path.startswith(f"/api/models/{REPO}"):
                if hub.fail_listing:
                    self._empty(500)
                    return
                payload = json.dumps(hub.info()).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)
                return
            found = self._file()
            if found is None:
                self._empty(404)
                return
            name, body = found
            hub.gets[name] += 1
            start = 0
            requested = self.headers.get("Range")
            if requested:
                hub.ranges.append(f"{name} {requested}")
                start = int(requested.removeprefix("bytes=").split("-")[0])
            part = body[start:]
            self._headers(name, body, 206 if requested else 200, len(part))
            if requested:
                self.send_header("Content-Range", f"bytes {start}-{len(body) - 1}/{len(body)}")
            self.end_headers()
            if name == "model.bin" and not requested and self._cut_short(part):
                return
            self.wfile.write(part)
            hub.sent[name] = hub.sent.get(name, 0) + len(part)

        def _cut_short(self, part: bytes) -> bool:
            """The knobs above; True when the body is not to be finished."""
            if hub.stall_after is not None:
                self._send_some(part[: hub.stall_after])
                hub.release.wait(60)  # the client is killed meanwhile
                return True
            if hub.drop_after is not None:
                self._send_some(part[: hub.drop_after])
                self.close_connection = True
                with contextlib.suppress(OSError):
                    self.connection.shutdown(2)
                return True
            if hub.pause_after is not None:
                self._send_some(part[: hub.pause_after])
                hub.paused.set()
                hub.resume.wait(120)
                self.wfile.write(part[hub.pause_after :])
                hub.sent["model.bin"] = len(part)
                return True
            return False

        def _send_some(self, data: bytes) -> None:
            self.wfile.write(data)
            self.wfile.flush()
            hub.sent["model.bin"] = len(data)

    return Handler


def hub_files(seed: int = 7) -> dict[str, bytes]:
    rng = random.Random(seed)
    return {
        "model.bin": rng.randbytes(BIG),
        "config.json": b'{"model_type": "whisper"}',
        "vocabulary.json": b'["a", "b"]',
        "README.md": b"not needed by the whisper executor",
        "pytorch_model.safetensors": b"not needed either",
    }


@contextlib.contextmanager
def running_hub(files: dict[str, bytes] | None = None) -> Iterator[FakeHub]:
    fake = FakeHub(files=files if files is not None else hub_files())
    server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(fake))
    server.daemon_threads = True
    fake.url = f"http://127.0.0.1:{server.server_address[1]}"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield fake
    finally:
        fake.release.set()
        fake.resume.set()
        server.shutdown()
        server.server_close()
