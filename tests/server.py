"""Run an app on a real uvicorn server on 127.0.0.1 with an ephemeral port, in a background thread.

For clients that need a real socket: the official `openai` SDK (sync), the `mcp` client, curl.
"""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from collections.abc import AsyncIterator, Iterator

import httpx
import uvicorn
from fastapi import FastAPI


@contextlib.contextmanager
def serve(app: FastAPI) -> Iterator[str]:
    """Yield the base URL ("http://127.0.0.1:PORT") while the server runs; stop it on exit."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    config = uvicorn.Config(app, log_level="warning", access_log=False, lifespan="on")
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError("test server did not start")
        time.sleep(0.01)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(30)
        sock.close()


@contextlib.asynccontextmanager
async def asgi_client(app: FastAPI, **kwargs: object) -> AsyncIterator[httpx.AsyncClient]:
    """httpx over ASGITransport, with the app's lifespan run around it."""
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://localhost", **kwargs) as client:
            yield client
