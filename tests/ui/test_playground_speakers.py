"""The playground shows who spoke when: diarized_json on a two-voice conversation (tiny diarizer, real
pocketsphinx) fills the segment table with a speaker column, one colour per speaker."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from talkies.api.app import create_app
from tests.api.test_diarization_http import diarization_settings
from tests.fixtures.diarization import FEMALE, MALE, conversation
from tests.fixtures.speech import write_wav
from tests.server import serve
from tests.ui.test_playground import _page, _shot, browser, voice_wav  # noqa: F401 (fixtures)

pytestmark = [pytest.mark.slow]


def test_diarized_segments_are_coloured_by_speaker(browser: Any, tmp_path: Path) -> None:  # noqa: F811
    wav = write_wav(tmp_path / "talk.wav", conversation((MALE, FEMALE)).audio)
    settings = diarization_settings(tmp_path / "server")
    with serve(create_app(settings)) as base, _page(browser, f"{base}/ui/") as (page, errors, _):
        page.set_input_files("#audio-file", str(wav))
        page.select_option("#asr-format", "diarized_json")
        page.fill("#asr-speakers", "2")
        page.click("#transcribe")
        page.wait_for_function("document.getElementById('status').textContent === 'Done.'")
        rows = page.locator("#segments tbody tr")
        speakers = [rows.nth(i).get_attribute("data-speaker") for i in range(rows.count())]
        classes = [rows.nth(i).get_attribute("class") for i in range(rows.count())]
        _shot(page, "transcribe-speakers")
    runs = [s for i, s in enumerate(speakers) if i == 0 or s != speakers[i - 1]]
    assert runs == ["A", "B", "A", "B"]
    assert {c for s, c in zip(speakers, classes, strict=True) if s == "A"} == {"speaker-0"}
    assert {c for s, c in zip(speakers, classes, strict=True) if s == "B"} == {"speaker-1"}
    assert errors == []
