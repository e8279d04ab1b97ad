"""Realtime sessions at their limits, against a real `talkies serve`: the bearer token in a header or as the
browser subprotocol, the Host / Origin guard on the upgrade, the session cap, the idle timeout, the turn
limit, a client that vanishes mid-turn (the model is freed), and ten concurrent sessions on two models
while /healthz keeps answering."""

from __future__ import annotations

import asyncio
import socket
import threading
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from websockets.exceptions import InvalidStatus

from tests.api.audio_helpers import SENTENCE_A, SENTENCE_B
from tests.live.realtime_helpers import (
    COMPLETED,
    MODEL,
    POCKETSPHINX,
    check_turns,
    encode,
    open_raw,
    spoken,
    ws_url,
)
from tests.live_server import LiveServer, live_server

pytestmark = pytest.mark.slow

TOKEN = "realtime-test-token"
MANUAL = {
    "type": "session.update",
    "session": {"type": "transcription", "audio": {"input": {"turn_detection": None}}},
}
HEALTHZ_CEILING_S = 5.0  # loose: /healthz must not wait for any transcription, on a machine shared by many


@pytest.fixture(scope="module")
def guarded(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    env = {
        "TALKIES_AUTH_TOKEN": TOKEN,
        "TALKIES_REALTIME_MAX_SESSIONS": "2",
        "TALKIES_REALTIME_IDLE_TIMEOUT": "2",
        "TALKIES_REALTIME_MAX_TURN_SECONDS": "1",
    }
    with live_server(tmp_path_factory.mktemp("guarded"), {MODEL: POCKETSPHINX}, **env) as running:
        yield running


def _status(url: str, **kwargs: Any) -> int | None:
    """The HTTP status a refused upgrade got, or None when it was accepted."""

    async def run() -> int | None:
        try:
            client = await open_raw(url, **kwargs)
        except InvalidStatus as refused:
            return refused.response.status_code
        await client.next_of("session.created")
        await client.ws.close()
        return None

    return asyncio.run(run())


def test_a_missing_or_wrong_token_is_refused(guarded: LiveServer) -> None:
    url = ws_url(guarded.url)
    assert _status(url) == 403
    assert _status(url, subprotocols=["realtime", "openai-insecure-api-key.wrong"]) == 403
    assert _status(url, additional_headers={"Authorization": "Bearer wrong"}) == 403


def test_the_token_as_header_or_browser_subprotocol(guarded: LiveServer) -> None:
    url = ws_url(guarded.url)
    assert _status(url, additional_headers={"Authorization": f"Bearer {TOKEN}"}) is None

    async def run() -> str | None:
        offered = ["realtime", f"openai-insecure-api-key.{TOKEN}", "openai-beta.realtime-v1"]
        client = await open_raw(url, subprotocols=offered)  # type: ignore[arg-type]
        created = await client.next_of("transcription_session.created")  # the beta subprotocol: beta shape
        assert created["session"]["input_audio_format"] == "pcm16"
        await client.ws.close()
        return client.ws.subprotocol

    assert asyncio.run(run()) == "realtime"


def test_host_and_origin_guards_apply_to_the_upgrade(guarded: LiveServer) -> None:
    auth = {"Authorization": f"Bearer {TOKEN}"}
    url = ws_url(guarded.url)
    assert _status(url, additional_headers=auth, origin="http://evil.example") == 403
    assert _status(url.replace("127.0.0.1", "localhost"), additional_headers=auth) is None
    assert _raw_upgrade_status(guarded, host="evil.example") == 403  # DNS rebinding: a name we do not answer
    assert _raw_upgrade_status(guarded, host="127.0.0.1") == 101


def _raw_upgrade_status(server: LiveServer, host: str) -> int:
    """The upgrade by hand: a websocket client library sets Host from the URL, never to another name."""
    port = int(server.url.rsplit(":", 1)[1])
    request = (
        f"GET /v1/realtime?intent=transcription HTTP/1.1\r\nHost: {host}\r\nUpgrade: websocket\r\n"
        "Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n"
        f"Authorization: Bearer {TOKEN}\r\n\r\n"
    )
    with socket.create_connection(("127.0.0.1", port), timeout=60) as sock:
        sock.sendall(request.encode())
        head = b""
        while b"\r\n" not in head:
            piece = sock.recv(1024)
            if not piece:
                break
            head += piece
    return int(head.split(b" ", 2)[1])


def test_the_session_cap_idle_timeout_and_turn_limit(guarded: LiveServer) -> None:
    auth = {"additional_headers": {"Authorization": f"Bearer {TOKEN}"}}
    url = ws_url(guarded.url)
    speech, size = encode(spoken((SENTENCE_A,)))

    async def run() -> None:
        first, second = await open_raw(url, **auth), await open_raw(url, **auth)
        await first.next_of("session.created")
        await second.next_of("session.created")
        third = await open_raw(url, **auth)
        refused = await third.next_of("error")
        assert refused["error"]["code"] == "session_limit_reached"
        assert "TALKIES_REALTIME_MAX_SESSIONS" in refused["error"]["message"]
        await third.until_closed()
        assert third.ws.close_code == 1013
        await second.ws.close()
        # the first sends nothing: the idle timeout closes it, with an error event that says why
        idle = await first.next_of("error")
        assert idle["error"]["code"] == "idle_timeout"
        await first.until_closed()
        assert first.ws.close_code == 1000
        # a freed place is usable, and a manual turn longer than the limit (1 s) is refused
        fourth = await open_raw(url, **auth)
        await fourth.send(MANUAL)
        await fourth.next_of("session.updated")
        await fourth.append(speech, size)
        full = await fourth.next_of("error")
        assert full["error"]["code"] == "buffer_full"
        assert "TALKIES_REALTIME_MAX_TURN_SECONDS" in full["error"]["message"]
        await fourth.send({"type": "input_audio_buffer.commit"})  # what fit (1 s) is still transcribed
        done = await fourth.next_of(COMPLETED)
        assert done["usage"]["seconds"] <= 1.0
        await fourth.ws.close()

    asyncio.run(run())


@pytest.fixture(scope="module")
def two_models(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    models = {"pocketsphinx-a": POCKETSPHINX, "pocketsphinx-b": POCKETSPHINX}
    # no interim decodes: ten sessions' finals, not their partials, are what these tests are about
    env = {"TALKIES_REALTIME_DELTA_INTERVAL_MS": "0"}
    with live_server(tmp_path_factory.mktemp("two-models"), models, **env) as running:
        yield running


def test_a_client_that_vanishes_mid_turn_frees_the_model(two_models: LiveServer) -> None:
    long_turn, size = encode(spoken((SENTENCE_A, SENTENCE_B) * 4, gap=0.3))  # ~20 s: a long decode

    async def run() -> None:
        client = await open_raw(ws_url(two_models.url, "intent=transcription&model=pocketsphinx-a"))
        await client.send(MANUAL)
        await client.next_of("session.updated")
        await client.append(long_turn, size)
        await client.send({"type": "input_audio_buffer.commit"})
        await client.next_of("input_audio_buffer.committed")
        client.ws.transport.abort()  # no close frame: the client is just gone

    asyncio.run(run())
    rows = two_models.wait_idle()
    assert all(row["in_flight"] == 0 and row["queued"] == 0 for row in rows), rows
    deadline = time.monotonic() + 60
    while "closed (client left)" not in two_models.log() and time.monotonic() < deadline:
        time.sleep(0.1)
    assert "closed (client left)" in two_models.log()
    assert "Traceback" not in two_models.log()
    assert two_models.alive


def test_ten_concurrent_sessions_on_two_models_while_healthz_answers(two_models: LiveServer) -> None:
    sentences = [(SENTENCE_A,), (SENTENCE_B,)]
    streams = [encode(spoken(s)) for s in sentences]
    healthz: list[float] = []
    stop = threading.Event()

    def probe() -> None:
        with httpx.Client(timeout=30) as http:
            while not stop.is_set():
                started = time.perf_counter()
                assert http.get(f"{two_models.url}/healthz").status_code == 200
                healthz.append(time.perf_counter() - started)
                stop.wait(0.05)

    async def session(index: int) -> list[dict[str, Any]]:
        model = "pocketsphinx-a" if index % 2 == 0 else "pocketsphinx-b"
        client = await open_raw(ws_url(two_models.url, f"intent=transcription&model={model}"))
        await client.next_of("session.created")
        data, size = streams[index % 2]
        await client.append(data, size)
        await client.next_of(COMPLETED)
        await client.ws.close()
        return client.events

    async def run() -> list[list[dict[str, Any]]]:
        return await asyncio.gather(*(session(i) for i in range(10)))

    prober = threading.Thread(target=probe)
    prober.start()
    try:
        results = asyncio.run(run())
    finally:
        stop.set()
        prober.join()
    for index, events in enumerate(results):
        check_turns(events, sentences[index % 2])
    assert healthz
    assert max(healthz) < HEALTHZ_CEILING_S, sorted(healthz)[-5:]
    models = {row["model"] for row in two_models.wait_idle()}
    assert models == {"pocketsphinx-a", "pocketsphinx-b"}
