"""Languages with real weights: Whisper base tells German from French (espeak-ng speaking them), and
`/v1/audio/translations` turns German speech into English text that carries its content words."""

from __future__ import annotations

import io
import wave

import httpx
import numpy as np
import pytest

from tests.fixtures.speech import SAMPLE_RATE, espeak
from tests.real.helpers import WHISPER, transcribe, words

GERMAN = "Ich trinke jeden Morgen eine Tasse Kaffee mit meiner Schwester."
FRENCH = "Bonjour, je voudrais un café et un croissant, s'il vous plaît."
GERMAN_VOICE = "de+klatt"  # Whisper base takes espeak-ng's default German voice for English (p = 0.7)
GERMAN_IN_ENGLISH = {"coffee", "cup"}
"""What every translation of GERMAN by Whisper base said here ("... a cup of coffee with my sister", "I'm
still in the morning, I'm going to have a cup of coffee ..."): the rest of the sentence varies with the
last bit of the audio."""


def _wav(text: str, voice: str) -> bytes:
    audio = np.concatenate([np.zeros(SAMPLE_RATE // 2, np.float32), espeak(text, voice=voice)])
    out = io.BytesIO()
    with wave.open(out, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(SAMPLE_RATE)
        w.writeframes((np.clip(audio, -1, 1) * 32767).astype("<i2").tobytes())
    return out.getvalue()


@pytest.mark.parametrize(
    ("text", "voice", "language"), [(GERMAN, GERMAN_VOICE, "de"), (FRENCH, "fr-fr", "fr")]
)
def test_language_is_detected(client: httpx.Client, text: str, voice: str, language: str) -> None:
    body = transcribe(client, _wav(text, voice), f"{language}.wav", response_format="verbose_json").json()
    assert body["language"] == language, body
    heard = set(words(body["text"]))
    assert len(heard & set(words(text))) >= len(set(words(text))) // 2, body["text"]  # and transcribed


def test_german_speech_is_translated_to_english(client: httpx.Client) -> None:
    answer = client.post(
        "/v1/audio/translations",
        data={"model": WHISPER, "temperature": "0"},
        files={"file": ("de.wav", _wav(GERMAN, GERMAN_VOICE))},
    )
    assert answer.status_code == 200, answer.text
    text = answer.json()["text"]
    assert set(words(text)) >= GERMAN_IN_ENGLISH, text
    assert not {"kaffee", "morgen", "tasse"} & set(words(text)), text  # English, not German
