"""The web playground in a real browser: Debian's Chromium driven by Playwright, against a real talkies
(uvicorn on a socket) with the weight-free engines. Screenshots of each view go to test-artifacts/ui/
(not committed)."""

from __future__ import annotations

import contextlib
import json
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest

from talkies.api.app import create_app
from talkies.settings import load_settings
from tests.api.audio_helpers import SENTENCE_A, silence, speak, weightfree_registry, word_overlap, write_wav
from tests.conftest import REPO_ROOT
from tests.server import serve

sync_api = pytest.importorskip("playwright.sync_api")
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(CHROMIUM is None, reason="Debian's chromium is not installed (scripts/install.sh)"),
]
ARTIFACTS = REPO_ROOT / "test-artifacts" / "ui"
TIMEOUT_MS = 120_000
TOKEN = "s3cret-token"


@pytest.fixture(scope="module")
def voice_wav(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """What the fake microphone plays (looped by Chromium): a sentence between short silences."""
    audio = np.concatenate([silence(0.3), speak(SENTENCE_A), silence(1.0)])
    return write_wav(tmp_path_factory.mktemp("mic") / "mic.wav", [audio])


@pytest.fixture(scope="module")
def browser(voice_wav: Path) -> Iterator[Any]:
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=CHROMIUM,
            args=[
                "--no-sandbox",
                "--disable-gpu",
                "--no-first-run",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                "--autoplay-policy=no-user-gesture-required",
                "--use-fake-ui-for-media-stream",
                "--use-fake-device-for-media-stream",
                f"--use-file-for-fake-audio-capture={voice_wav}",
            ],
        )
        try:
            yield browser
        finally:
            browser.close()


@contextlib.contextmanager
def _server(tmp_path: Path, **overrides: Any) -> Iterator[str]:
    settings = load_settings(
        models_file=weightfree_registry(tmp_path / "models.json"),
        data_dir=tmp_path / "data",
        sweeper_interval=0,
        device="cpu",
        **overrides,
    )
    with serve(create_app(settings)) as base:
        yield base


@contextlib.contextmanager
def _page(browser: Any, url: str, *, bypass_csp: bool = True) -> Iterator[tuple[Any, list[str], list[str]]]:
    """(page, console/page errors, every URL requested). The test's own waits evaluate JavaScript
    strings, which the page's Content-Security-Policy forbids; one test runs with the policy on."""
    context = browser.new_context(bypass_csp=bypass_csp)
    context.grant_permissions(["microphone"])
    page = context.new_page()
    page.set_default_timeout(TIMEOUT_MS)
    errors: list[str] = []
    requests: list[str] = []
    page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.on("request", lambda r: requests.append(r.url))
    page.goto(url)
    page.wait_for_selector("#asr-model option", state="attached")
    try:
        yield page, errors, requests
    finally:
        context.close()


def _shot(page: Any, name: str) -> None:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / f"{name}.png"), full_page=True)


def test_page_loads_offline_speaks_and_lists_voices(browser: Any, tmp_path: Path) -> None:
    with _server(tmp_path) as base, _page(browser, f"{base}/") as (page, errors, requests):
        assert page.title() == "talkies playground"
        _shot(page, "transcribe-empty")
        page.click("#tab-speak")
        page.wait_for_function("document.getElementById('tts-voice').value !== ''")
        assert page.input_value("#tts-voice") == "en-us+klatt"  # the model's default voice
        options = page.eval_on_selector_all("#tts-voices option", "os => os.map(o => o.value)")
        assert "de" in options
        page.fill("#tts-input", "Hello from the talkies playground. It speaks as it streams.")
        page.click("#speak")
        page.wait_for_function(
            "(() => { const a = document.getElementById('tts-audio');"
            " return Number.isFinite(a.duration) && a.duration > 1; })()"
        )
        duration = page.evaluate("document.getElementById('tts-audio').duration")
        assert 1.5 < duration < 20
        assert page.is_visible("#download")
        _shot(page, "speak")
    assert errors == []
    assert all(url.startswith((base, "blob:", "data:")) for url in requests), requests


def test_page_runs_under_its_content_security_policy(browser: Any, tmp_path: Path) -> None:
    with _server(tmp_path) as base, _page(browser, f"{base}/", bypass_csp=False) as (page, errors, requests):
        page.click("#tab-speak")
        sync_api.expect(page.locator("#tts-voice")).to_have_value("en-us+klatt", timeout=TIMEOUT_MS)
        page.click("#tab-models")
        sync_api.expect(page.get_by_role("button", name="Load espeak-ng")).to_be_visible(timeout=TIMEOUT_MS)
    assert errors == []
    assert all(url.startswith(base) for url in requests), requests


def test_upload_transcription_shows_words_and_segments(browser: Any, tmp_path: Path) -> None:
    audio = np.concatenate([speak(SENTENCE_A), silence(0.5)])
    wav = write_wav(tmp_path / "sentence.wav", [audio])
    with _server(tmp_path) as base, _page(browser, f"{base}/ui/") as (page, errors, _):
        page.set_input_files("#audio-file", str(wav))
        page.click("#transcribe")
        page.wait_for_function("document.getElementById('status').textContent === 'Done.'")
        text = page.inner_text("#transcript")
        assert word_overlap(SENTENCE_A, text) >= 0.6, text
        rows = page.locator("#segments tbody tr")
        assert rows.count() >= 1
        rows.first.click()  # plays that span of the uploaded file
        page.wait_for_function("!document.getElementById('source-audio').paused || true")
        assert "s)" in page.inner_text("#asr-time")
        _shot(page, "transcribe-upload")
    assert errors == []


def test_microphone_capture_is_transcribed(browser: Any, tmp_path: Path) -> None:
    with _server(tmp_path) as base, _page(browser, f"{base}/") as (page, errors, _):
        page.click("#record")
        page.wait_for_function("document.getElementById('record-state').textContent === 'Recording…'")
        page.wait_for_timeout(4500)  # the fake microphone plays the sentence (~3 s with its silences)
        page.click("#record")
        page.wait_for_function("document.getElementById('record-state').textContent.startsWith('Recorded')")
        page.click("#transcribe")
        page.wait_for_function("['Done.'].includes(document.getElementById('status').textContent)")
        text = page.inner_text("#transcript")
        _shot(page, "transcribe-microphone")
    assert word_overlap(SENTENCE_A, text) >= 0.5, text
    assert errors == []


def test_token_prompt_when_auth_is_on(browser: Any, tmp_path: Path) -> None:
    with _server(tmp_path, auth_token=TOKEN) as base:
        assert httpx.get(f"{base}/v1/models").status_code == 401
        assert httpx.get(f"{base}/").status_code == 200  # the page itself is public
        context = browser.new_context()
        page = context.new_page()
        page.set_default_timeout(TIMEOUT_MS)
        sent: list[dict[str, str]] = []
        page.on("request", lambda r: sent.append({"url": r.url, "auth": r.headers.get("authorization", "")}))
        page.goto(f"{base}/")
        page.wait_for_selector("#token-dialog[open]")
        _shot(page, "token-prompt")
        page.fill("#token-input", TOKEN)
        page.click("#token-save")
        page.wait_for_selector("#asr-model option", state="attached")
        stored = page.evaluate("sessionStorage.getItem('talkies-token')")
        context.close()
    assert stored == TOKEN
    api_calls = [r for r in sent if "/v1/models" in r["url"]]
    assert api_calls[-1]["auth"] == f"Bearer {TOKEN}"
    assert all(TOKEN not in r["url"] for r in sent)  # never in a URL


def test_models_view_unloads_and_loads(browser: Any, tmp_path: Path) -> None:
    with _server(tmp_path) as base, _page(browser, f"{base}/") as (page, errors, _):
        assert httpx.post(f"{base}/api/ps/espeak-ng").json() == {"loaded": "espeak-ng"}
        page.click("#tab-models")
        unload = page.get_by_role("button", name="Unload espeak-ng")
        unload.wait_for()
        _shot(page, "models")
        unload.click()
        page.get_by_role("button", name="Load espeak-ng").wait_for()
        assert httpx.get(f"{base}/api/ps").json()["models"] == []
        page.get_by_role("button", name="Load espeak-ng").click()
        page.get_by_role("button", name="Unload espeak-ng").wait_for()
        assert [row["model"] for row in httpx.get(f"{base}/api/ps").json()["models"]] == ["espeak-ng"]
    assert errors == []


def test_keyboard_moves_between_tabs(browser: Any, tmp_path: Path) -> None:
    with _server(tmp_path) as base, _page(browser, f"{base}/") as (page, _, __):
        page.focus("#tab-transcribe")
        page.keyboard.press("ArrowRight")
        assert page.evaluate("document.activeElement.id") == "tab-speak"
        assert page.is_visible("#view-speak")
        assert not page.is_visible("#view-transcribe")
        unlabeled = page.evaluate(
            "[...document.querySelectorAll('input, select, textarea')]"
            ".filter(e => !e.labels || e.labels.length === 0).map(e => e.id)"
        )
        assert unlabeled == []


def test_works_under_a_path_prefix(browser: Any, tmp_path: Path) -> None:
    """Mounted at /speech/ behind a prefix (as a reverse proxy would), every request stays under it."""
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
    with serve(outer) as base, _page(browser, f"{base}/speech/ui/") as (page, errors, requests):  # type: ignore[arg-type]
        page.click("#tab-speak")
        page.wait_for_function("document.getElementById('tts-voice').value !== ''")
    assert errors == []
    paths = [r.removeprefix(base) for r in requests if r.startswith(base)]
    assert paths
    assert all(p.startswith("/speech/") for p in paths), paths


def test_ui_off(tmp_path: Path) -> None:
    with _server(tmp_path, ui=False) as base:
        assert httpx.get(f"{base}/").status_code == 404
        assert httpx.get(f"{base}/ui/static/app.js").status_code == 404
        assert httpx.get(f"{base}/v1/models").status_code == 200


def test_static_files_are_served_with_a_strict_policy(tmp_path: Path) -> None:
    with _server(tmp_path) as base:
        script = httpx.get(f"{base}/ui/static/app.js")
        page = httpx.get(f"{base}/ui", follow_redirects=True)
        assert httpx.get(f"{base}/ui/static/../../etc/passwd").status_code == 404
    assert script.headers["content-type"].startswith("text/javascript")
    assert "default-src 'self'" in script.headers["content-security-policy"]
    assert page.status_code == 200  # /ui redirects to /ui/
    assert 'src="static/app.js"' in page.text
    assert json.dumps("http") not in page.text.split("<body>")[0]  # no absolute URL in the head
