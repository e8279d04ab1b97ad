"""A small speech-server stand-in for the process-engine tests (stdlib only; run as a script).

    python script_server.py --port N [--mode MODE] [--exit-after-ready]

Modes: `ok` (healthy, answers the audio endpoints), `never-healthy` (/health answers 503 forever),
`die-on-request` (exits with code 3 as soon as an audio request arrives, before answering),
`ignore-term` (ok, but SIGTERM is ignored: only SIGKILL stops it). It prints what it does, so a test can
read it back through talkies' log and load errors.

Answers: POST /v1/audio/transcriptions and /translations -> JSON with the `model` it received, the body's
length and sha256 and its content type; POST /v1/audio/speech -> the JSON it received back in the
`x-received` header (base64), then `chunks` x `chunk_bytes` bytes sent with `gap` seconds between them
(streamed, chunked); input "fail please" -> 500 "boom from upstream"; GET /v1/audio/voices -> the
`model` query and the request's headers (answered with a Connection-listed header and an x-request-id
of its own); GET /info -> argv, pid and the TEST_* environment.
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import json
import os
import re
import signal
import sys
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlparse

ARGS = argparse.Namespace()


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True  # headers and body go out as separate writes: no delayed-ACK stalls

    def log_message(self, format: str, *args: object) -> None:
        print("request:", format % args, flush=True)

    def _json(self, status: int, body: object, headers: dict[str, str] | None = None) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(data)))
        for key, value in (headers or {}).items():
            self.send_header(key, value)
        self.end_headers()
        self.wfile.write(data)

    def _body(self) -> bytes:
        if self.headers.get("transfer-encoding", "").lower() == "chunked":
            data = bytearray()
            while True:
                size = int(self.rfile.readline().strip().split(b";")[0], 16)
                if size == 0:
                    self.rfile.readline()
                    return bytes(data)
                data += self.rfile.read(size)
                self.rfile.readline()
        return self.rfile.read(int(self.headers.get("content-length", "0")))

    def do_GET(self) -> None:
        url = urlparse(self.path)
        if url.path == "/health":
            if ARGS.mode == "never-healthy":
                self._json(503, {"status": "loading"})
            else:
                self._json(200, {"status": "ok"})
        elif url.path == "/v1/audio/voices":
            # The request's headers come back in the body; the answer carries a hop-by-hop header of its own
            # (named in Connection) and an x-request-id, which the proxy must not pass on.
            received = [[k.lower(), v] for k, v in self.headers.items()]
            body = {"voices": [{"voice": "stand-in"}], "model": parse_qs(url.query).get("model")}
            extra = {"connection": "x-upstream-hop", "x-upstream-hop": "hop", "x-request-id": "upstream-id"}
            self._json(200, {**body, "headers": received}, {**extra, "x-upstream-kept": "kept"})
        elif url.path == "/info":
            env = {k: v for k, v in os.environ.items() if k.startswith("TEST_")}
            self._json(200, {"argv": sys.argv, "pid": os.getpid(), "env": env})
        else:
            self._json(404, {"error": "no such path"})

    def do_POST(self) -> None:
        if ARGS.mode == "die-on-request":
            print("die-on-request: exiting now", flush=True)
            os._exit(3)
        body = self._body()
        path = urlparse(self.path).path
        if path in ("/v1/audio/transcriptions", "/v1/audio/translations"):
            found = re.search(rb'name="model"\r\n\r\n(.*?)\r\n--', body, re.DOTALL)
            self._json(
                200,
                {
                    "text": "transcribed by the stand-in",
                    "model": found.group(1).decode() if found else None,
                    "bytes": len(body),
                    "sha256": hashlib.sha256(body).hexdigest(),
                    "content_type": self.headers.get("content-type"),
                    "authorization": self.headers.get("authorization"),
                },
            )
        elif path == "/v1/audio/speech":
            request = json.loads(body)
            if request.get("input") == "fail please":
                data = b"boom from upstream"
                self.send_response(500)
                self.send_header("content-type", "text/plain")
                self.send_header("content-length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)
                return
            if request.get("input") == "teapot":
                self._json(418, {"error": "I am a teapot"})
                return
            self.send_response(200)
            self.send_header("content-type", "audio/pcm")
            self.send_header("transfer-encoding", "chunked")
            self.send_header("x-received", base64.b64encode(body).decode())
            self.end_headers()
            chunks, size, gap = (
                int(request.get("chunks", 3)),
                int(request.get("chunk_bytes", 1000)),
                float(request.get("gap", 0)),
            )
            for i in range(chunks):
                payload = bytes([i % 256]) * size
                self.wfile.write(b"%x\r\n%s\r\n" % (len(payload), payload))
                self.wfile.flush()
                if gap:
                    time.sleep(gap)
            self.wfile.write(b"0\r\n\r\n")
        else:
            self._json(404, {"error": "no such path"})


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--mode", default="ok")
    parser.add_argument("extra", nargs="*")
    parser.parse_args(namespace=ARGS)
    if ARGS.mode == "ignore-term":
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        print("ignoring SIGTERM", flush=True)
    print(f"script server pid {os.getpid()} mode {ARGS.mode} on port {ARGS.port}", flush=True)
    server = ThreadingHTTPServer(("127.0.0.1", ARGS.port), Handler)
    server.daemon_threads = True
    server.serve_forever()


if __name__ == "__main__":
    main()
