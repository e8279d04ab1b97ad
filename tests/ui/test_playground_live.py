"""The playground's live microphone mode in a real browser (Debian's Chromium, a fake microphone playing
espeak-ng speech): the AudioWorklet streams 24 kHz PCM16 over the realtime WebSocket and the page shows the
words as they are transcribed, under the page's Content-Security-Policy, and under a path prefix with a
token (sent as the browser subprotocol)."""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Any

import pytest

from talkies.api.app import create_app
from talkies.settings import load_settings
from tests.api.audio_helpers import SENTENCE_A, weightfree_registry, word_overlap
from tests.server import serve
from tests.ui.test_playground import (  # noqa: F401 (fixtures)
    CHROMIUM,
    TIMEOUT_MS,
    TOKEN,
    _page,
    _server,
    _shot,
    browser,
    voice_wav,
)

sync_api = pytest.importorskip("playwright.sync_api")
pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(CHROMIUM is None, reason="Debian's chromium is not installed (scripts/install.sh)"),
]


def _final_text(page: Any) -> str:
    final = page.locator("#transcript .final").first
    sync_api.expect(final).not_to_be_empty(timeout=TIMEOUT_MS)
    return str(final.inner_text())


def test_live_mode_under_the_content_security_policy(browser: Any, tmp_path: Path) -> None:  # noqa: F811
    with _server(tmp_path) as base, _page(browser, f"{base}/", bypass_csp=False) as (page, errors, requests):
        sockets: list[str] = []
        page.on("websocket", lambda ws: sockets.append(ws.url))
        page.click("#live")
        sync_api.expect(page.locator("#live")).to_have_attribute("aria-pressed", "true", timeout=TIMEOUT_MS)
        text = _final_text(page)
        _shot(page, "transcribe-live")
        page.click("#live")
        sync_api.expect(page.locator("#live-state")).to_have_text("Stopped.", timeout=TIMEOUT_MS)
    assert word_overlap(SENTENCE_A, text) >= 0.6, text
    assert errors == []
    assert all(url.startswith(base) for url in requests), requests
    assert sockets
    assert all(
        url.startswith(base.replace("http", "ws") + "/v1/realtime?intent=transcription") for url in sockets
    )


def test_live_mode_under_a_path_prefix(browser: Any, tmp_path: Path) -> None:  # noqa: F811
    """Mounted at /speech/ (as behind a reverse proxy), the socket goes to /speech/v1/realtime."""
    from starlette.applications import Starlette
    from starlette.routing import Mount

    settings = load_settings(
        models_file=weightfree_registry(tmp_path / "models.json"),
        data_dir=tmp_path / "data",
        sweeper_interval=0,
        device="cpu",
    )
    inner = create_app(settings)

    @contextlib.asynccontextmanager
    async def lifespan(_: Starlette) -> Any:
        async with inner.router.lifespan_context(inner):
            yield

    outer = Starlette(routes=[Mount("/speech", app=inner)], lifespan=lifespan)
    with serve(outer) as base, _page(browser, f"{base}/speech/ui/") as (page, errors, _):  # type: ignore[arg-type]
        sockets: list[str] = []
        page.on("websocket", lambda ws: sockets.append(ws.url))
        page.click("#live")
        text = _final_text(page)
        page.click("#live")
    assert word_overlap(SENTENCE_A, text) >= 0.6, text
    assert errors == []
    assert sockets
    assert all(url.startswith(base.replace("http", "ws") + "/speech/v1/realtime?") for url in sockets)


def test_live_mode_sends_the_token_as_a_subprotocol(browser: Any, tmp_path: Path) -> None:  # noqa: F811
    with _server(tmp_path, auth_token=TOKEN) as base:
        context = browser.new_context()
        context.grant_permissions(["microphone"])
        page = context.new_page()
        page.set_default_timeout(TIMEOUT_MS)
        sockets: list[str] = []
        page.on("websocket", lambda ws: sockets.append(ws.url))
        page.goto(f"{base}/")
        page.wait_for_selector("#token-dialog[open]")
        page.fill("#token-input", TOKEN)
        page.click("#token-save")
        page.wait_for_selector("#asr-model option", state="attached")
        page.click("#live")
        text = _final_text(page)
        page.click("#live")
        context.close()
    assert word_overlap(SENTENCE_A, text) >= 0.6, text
    assert sockets
    assert all(TOKEN not in url for url in sockets)  # the token is a subprotocol, never in the URL
