"""The playground's model catalog, voice list and transcript waveform in Debian's Chromium (Playwright),
against a real talkies: it opens on installed models, a Download shows its progress and ends installed (the
fake hub of tests/fakehub.py), the voice list is the catalog's, and a transcript's segment regions seek
the audio. Every test also holds the page to no console errors and no request beyond the server."""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest

from talkies.api.app import create_app
from talkies.settings import load_settings
from tests.api.audio_helpers import SENTENCE_A, silence, speak, weightfree_registry, write_wav
from tests.conftest import REPO_ROOT, write_registry
from tests.fakehub import BIG, REPO, FakeHub, running_hub
from tests.server import serve
from tests.ui.test_playground import CHROMIUM, TIMEOUT_MS, _page, _shot, browser, voice_wav

sync_api = pytest.importorskip("playwright.sync_api")
pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(CHROMIUM is None, reason="Debian's chromium is not installed (scripts/install.sh)"),
]
__all__ = ["browser", "voice_wav"]  # the fixtures, shared with test_playground


@contextlib.contextmanager
def _server(tmp_path: Path, models_file: Path, **overrides: Any) -> Iterator[str]:
    settings = load_settings(
        models_file=models_file, data_dir=tmp_path / "data", sweeper_interval=0, device="cpu", **overrides
    )
    with serve(create_app(settings)) as base:
        yield base


def _only_local(base: str, requests: list[str]) -> None:
    assert all(url.startswith((base, "blob:", "data:")) for url in requests), requests


def test_opens_on_installed_models_grouped_by_what_runs(browser: Any, tmp_path: Path) -> None:
    """The CPU registry with nothing downloaded: the page opens on pocketsphinx and espeak-ng (under its
    Content-Security-Policy: only locators, no evaluated scripts), and lists the rest by group."""
    listed = None
    with (
        _server(tmp_path, REPO_ROOT / "models-cpu.json") as base,
        _page(browser, f"{base}/", bypass_csp=False) as (page, errors, requests),
    ):
        listed = httpx.get(f"{base}/v1/models").json()["data"]
        expect = sync_api.expect
        expect(page.locator("#asr-model")).to_have_value("pocketsphinx-en-us", timeout=TIMEOUT_MS)
        expect(page.locator("#tts-model")).to_have_value("espeak-ng", timeout=TIMEOUT_MS)
        groups = page.locator("#asr-model optgroup")
        expect(groups.first).to_have_attribute("label", "Installed")
        expect(page.locator("#asr-model optgroup[label='Installed'] option")).to_have_count(1)
        downloadable = [m for m in listed if m["available"] and not m["installed"] and m["modality"] == "asr"]
        expect(page.locator("#asr-model optgroup[label='Download first'] option")).to_have_count(
            len(downloadable)
        )
        expect(page.locator("#asr-model-note")).to_have_text("")  # installed: nothing to download

        page.click("#tab-models")
        installed = page.locator("#models-table tbody[data-group='installed'] tr[data-model]")
        expect(installed).to_have_count(2)
        expect(page.get_by_role("button", name="Load espeak-ng")).to_be_visible(timeout=TIMEOUT_MS)
        for model in listed:
            row = page.locator(f"#models-table tr[data-model='{model['id']}']")
            if not model["available"]:
                expect(row).to_contain_text(f"unavailable: {model['unavailable_reason']}")
                expect(row.get_by_role("button")).to_have_count(0)
            elif not model["installed"]:
                expect(row.get_by_role("button", name=f"Download {model['id']}")).to_be_visible()
                expect(row).to_contain_text("not downloaded")
        _shot(page, "models-grouped")
    assert listed is not None
    assert {m["id"] for m in listed if m["installed"]} == {"pocketsphinx-en-us", "espeak-ng"}
    assert errors == []
    _only_local(base, requests)


@pytest.fixture
def hub(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[FakeHub]:
    with running_hub() as fake:
        monkeypatch.setenv("HF_ENDPOINT", fake.url)
        monkeypatch.setenv("HF_HUB_OFFLINE", "0")
        monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
        monkeypatch.setenv("HF_HUB_DISABLE_TELEMETRY", "1")
        monkeypatch.setenv("PYTHONPATH", str(REPO_ROOT / "src"))
        yield fake


def test_download_shows_progress_and_ends_installed(browser: Any, tmp_path: Path, hub: FakeHub) -> None:
    pytest.importorskip("faster_whisper")  # the whisper executor must be available to be downloadable
    registry = write_registry(
        tmp_path / "models.json",
        {"tiny": {"executor": "whisper", "repo": REPO}, "espeak-ng": {"executor": "espeak"}},
    )
    hub.pause_after = BIG // 4  # the transfer waits half-way until the progress bar was seen
    with _server(tmp_path, registry) as base, _page(browser, f"{base}/") as (page, errors, requests):
        sync_api.expect(page.locator("#asr-model")).to_have_value("tiny")  # the only ASR model
        sync_api.expect(page.locator("#asr-model-note")).to_contain_text("Not downloaded yet")
        page.click("#tab-models")
        row = page.locator("#models-table tr[data-model='tiny']")
        row.get_by_role("button", name="Download tiny").click()
        bar = row.locator("progress")
        bar.wait_for()
        assert hub.paused.wait(120), "model.bin's transfer never started"
        sync_api.expect(bar).to_have_attribute(
            "max", str(sum(len(hub.files[n]) for n in hub.files if n in _WANTED))
        )
        sync_api.expect(page.locator("#asr-model-note progress")).to_be_attached()  # beside the select too
        _shot(page, "models-downloading")
        hub.resume.set()
        sync_api.expect(page.get_by_role("button", name="Load tiny")).to_be_visible(timeout=TIMEOUT_MS)
        sync_api.expect(page.locator("#status")).to_have_text("Downloaded tiny.")
        sync_api.expect(
            page.locator("#models-table tbody[data-group='installed'] tr[data-model='tiny']")
        ).to_be_visible()
        sync_api.expect(
            page.locator("#asr-model optgroup[label='Installed'] option[value='tiny']")
        ).to_be_attached()
        sync_api.expect(page.locator("#asr-model-note")).to_have_text("")
        _shot(page, "models-downloaded")
        assert httpx.get(f"{base}/v1/models/tiny").json()["installed"] is True
    assert hub.gets["model.bin"] == 1
    assert errors == []
    _only_local(base, requests)


_WANTED = ("model.bin", "config.json", "vocabulary.json")


def test_voice_list_comes_from_the_catalog_and_is_searchable(browser: Any, tmp_path: Path) -> None:
    registry = weightfree_registry(tmp_path / "models.json")
    with _server(tmp_path, registry) as base, _page(browser, f"{base}/") as (page, errors, requests):
        catalog = [
            v["voice"]
            for v in httpx.get(f"{base}/v1/audio/voices", params={"model": "espeak-ng"}).json()["voices"]
        ]
        page.click("#tab-speak")
        options = page.locator("#voice-list option")
        sync_api.expect(options).to_have_count(len(catalog), timeout=TIMEOUT_MS)
        assert page.eval_on_selector_all("#voice-list option", "os => os.map(o => o.value)") == catalog
        page.fill("#voice-search", "de")
        shown = page.eval_on_selector_all("#voice-list option", "os => os.map(o => o.textContent)")
        assert shown
        assert len(shown) < len(catalog)
        assert all("de" in text.lower() for text in shown)
        first = page.eval_on_selector_all("#voice-list option", "os => os[0].value")
        page.select_option("#voice-list", first)
        assert page.input_value("#tts-voice") == first
        page.fill("#tts-voice", "en-us+klatt")  # a name (or a blend) is still typed freely
        page.fill("#voice-search", "")
        sync_api.expect(options).to_have_count(len(catalog))
        _shot(page, "voices")
    assert errors == []
    _only_local(base, requests)


def test_transcript_segment_regions_seek_the_audio(browser: Any, tmp_path: Path) -> None:
    audio = np.concatenate([speak(SENTENCE_A), silence(1.0), speak(SENTENCE_A), silence(0.5)])
    wav = write_wav(tmp_path / "two.wav", [audio])
    registry = weightfree_registry(tmp_path / "models.json")
    with _server(tmp_path, registry) as base, _page(browser, f"{base}/ui/") as (page, errors, requests):
        page.set_input_files("#audio-file", str(wav))
        page.click("#transcribe")
        page.wait_for_function("document.getElementById('status').textContent === 'Done.'")
        regions = page.locator("#waveform .region")
        sync_api.expect(page.locator("#waveform")).to_be_visible()
        segments = page.locator("#segments tbody tr").count()
        assert segments >= 1
        sync_api.expect(regions).to_have_count(segments)
        drawn = page.evaluate(
            "(() => { const c = document.querySelector('#waveform canvas');"
            " const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;"
            " let n = 0; for (let i = 3; i < d.length; i += 4) if (d[i] > 0) n++; return n; })()"
        )
        assert drawn > 0  # the waveform itself was drawn
        last = regions.nth(segments - 1)
        start = float(last.get_attribute("data-start") or "nan")
        end = float(last.get_attribute("data-end") or "nan")
        assert 0 <= start < end
        box = last.bounding_box()
        assert box is not None
        assert box["width"] > 0
        last.click()
        page.wait_for_function(
            f"document.getElementById('source-audio').currentTime >= {start - 0.05}"
            f" && document.getElementById('source-audio').currentTime <= {end + 0.5}"
        )
        _shot(page, "transcript-waveform")
    assert errors == []
    _only_local(base, requests)


def test_models_tab_shows_a_pull_another_client_started(browser: Any, tmp_path: Path, hub: FakeHub) -> None:
    """Nobody clicks Refresh: the tab polls itself, shows the other client's download, then the result."""
    pytest.importorskip("faster_whisper")
    registry = write_registry(
        tmp_path / "models.json",
        {"tiny": {"executor": "whisper", "repo": REPO}, "espeak-ng": {"executor": "espeak"}},
    )
    hub.pause_after = BIG // 4
    with _server(tmp_path, registry) as base, _page(browser, f"{base}/") as (page, errors, requests):
        page.click("#tab-models")
        row = page.locator("#models-table tr[data-model='tiny']")
        sync_api.expect(row.get_by_role("button", name="Download tiny")).to_be_visible()
        other = threading.Thread(
            target=lambda: httpx.post(
                f"{base}/api/pull", json={"model": "tiny"}, timeout=300
            ).raise_for_status()
        )
        other.start()
        try:
            assert hub.paused.wait(120), "model.bin's transfer never started"
            sync_api.expect(row.locator("progress")).to_be_visible(timeout=TIMEOUT_MS)
        finally:
            hub.resume.set()
            other.join(300)
        sync_api.expect(page.get_by_role("button", name="Load tiny")).to_be_visible(timeout=TIMEOUT_MS)
        sync_api.expect(row.locator("progress")).to_have_count(0)
    assert errors == []
    _only_local(base, requests)


def test_a_first_use_shows_its_download_progress(browser: Any, tmp_path: Path, hub: FakeHub) -> None:
    """Transcribing with a model not on disk yet: the status line follows the download the request started."""
    pytest.importorskip("faster_whisper")
    registry = write_registry(
        tmp_path / "models.json",
        {"tiny": {"executor": "whisper", "repo": REPO}, "espeak-ng": {"executor": "espeak"}},
    )
    wav = write_wav(tmp_path / "a.wav", [np.concatenate([speak(SENTENCE_A), silence(0.3)])])
    hub.pause_after = BIG // 4
    with _server(tmp_path, registry) as base, _page(browser, f"{base}/") as (page, errors, requests):
        sync_api.expect(page.locator("#asr-model")).to_have_value("tiny")
        page.set_input_files("#audio-file", str(wav))
        page.click("#transcribe")
        try:
            assert hub.paused.wait(120), "the first use did not start a download"
            sync_api.expect(page.locator("#status")).to_contain_text(
                "downloading tiny first", timeout=TIMEOUT_MS
            )
            _shot(page, "first-use-download")
        finally:
            hub.resume.set()
        # The fake hub's weights are random bytes: once downloaded, the load fails and says so.
        sync_api.expect(page.locator("#status")).to_contain_text("Transcription failed", timeout=TIMEOUT_MS)
        assert httpx.get(f"{base}/v1/models/tiny").json()["installed"] is True
    assert hub.gets["model.bin"] == 1
    assert [e for e in errors if "503" not in e] == []  # the failed load's 503 is the only console error
    _only_local(base, requests)


def test_diarized_transcript_regions_are_coloured_per_speaker(browser: Any, tmp_path: Path) -> None:
    """Under the page's Content-Security-Policy (locators and boxes only, no evaluated scripts): the regions
    are placed on the waveform (their positions are set through the CSSOM, which the policy allows), one
    colour per speaker."""
    a, b = speak(SENTENCE_A), speak(SENTENCE_A)
    gap = silence(0.5)
    left = np.concatenate([a, gap, np.zeros_like(b)])
    right = np.concatenate([np.zeros_like(a), gap, b])
    wav = write_wav(tmp_path / "stereo.wav", [left, right])
    registry = weightfree_registry(tmp_path / "models.json")
    with (
        _server(tmp_path, registry) as base,
        _page(browser, f"{base}/", bypass_csp=False) as (page, errors, requests),
    ):
        page.set_input_files("#audio-file", str(wav))
        page.check("#asr-diarization")
        page.click("#transcribe")
        sync_api.expect(page.locator("#status")).to_have_text("Done.", timeout=TIMEOUT_MS)
        regions = page.locator("#waveform .region")
        sync_api.expect(regions.first).to_be_visible()
        speakers = page.locator("#segments tbody tr td:nth-child(3)").all_inner_texts()
        assert len(set(speakers)) == 2, speakers
        sync_api.expect(regions).to_have_count(len(speakers))
        classes = [regions.nth(i).get_attribute("class") for i in range(len(speakers))]
        assert {"region speaker-0", "region speaker-1"} == set(classes), classes
        other = classes.index("region speaker-1")
        assert speakers[other] != speakers[0]
        first, second = regions.nth(0).bounding_box(), regions.nth(other).bounding_box()
        assert first is not None
        assert second is not None
        assert first["width"] > 20  # sized by its segment, not the 4 px minimum
        assert second["x"] > first["x"] + first["width"] / 2  # the second speaker talks later
        _shot(page, "transcript-diarized")
    assert errors == []
    _only_local(base, requests)  # the page, its files, the API, and the uploaded file's blob: URL
