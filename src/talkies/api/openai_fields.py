"""OpenAI's multipart fields that FastAPI cannot read for us: repeated `xxx[]` keys, the bracketed
`chunking_strategy[...]` object (or the same object as a JSON string), `include[]`, `stream`.

The Python SDK sends `include[]=logprobs`, `chunking_strategy=auto` or `chunking_strategy[type]=server_vad`
+ `chunking_strategy[threshold]=0.5` ...; other clients send `chunking_strategy={"type": ...}` as JSON.
Every value is checked here; a bad one answers 400 naming the field.
"""

from __future__ import annotations

import base64
import binascii
import json
from dataclasses import dataclass, field, replace
from typing import Any

from talkies.api.uploads import ReceivedForm
from talkies.audio.vad import VadOptions
from talkies.errors import BadRequestError, DiarizationError
from talkies.services.diarization import SpeakerRequest

CHUNKING = "chunking_strategy"
# OpenAI's VadConfig defaults (additionalProperties: false)
VAD_DEFAULTS = {"threshold": 0.5, "silence_duration_ms": 200, "prefix_padding_ms": 300}
INCLUDE_VALUES = ("logprobs",)
REFERENCES = "known_speaker_references"


@dataclass(frozen=True, slots=True)
class OpenAIFields:
    stream: bool = False
    include: tuple[str, ...] = ()
    vad: VadOptions | None = None  # chunking_strategy mapped onto our VAD
    speaker_names: tuple[str, ...] = ()  # known_speaker_names[]: channel labels, or names of references
    speakers: SpeakerRequest = field(
        default_factory=SpeakerRequest
    )  # known_speaker_references[], speaker counts, acoustic


def read_openai_fields(form: ReceivedForm, server_vad: VadOptions) -> OpenAIFields:
    include = tuple(v.strip() for v in _list(form, "include") if v.strip())
    unknown = [v for v in include if v not in INCLUDE_VALUES]
    if unknown:
        raise BadRequestError(
            f"include[] {unknown[0]!r} is not supported; valid values: {', '.join(INCLUDE_VALUES)}",
            param="include",
        )
    return OpenAIFields(
        stream=_bool(form.get("stream"), "stream"),
        include=include,
        vad=chunking_vad(form, server_vad),
        speaker_names=known_speaker_names(form),
        speakers=SpeakerRequest(
            references=tuple(
                data_url_bytes(value, index) for index, value in enumerate(_list(form, REFERENCES))
            ),
            num_speakers=_count(form, "num_speakers"),
            min_speakers=_count(form, "min_speakers"),
            max_speakers=_count(form, "max_speakers"),
            acoustic=_bool(form.get("acoustic_diarization"), "acoustic_diarization"),
        ),
    )


def data_url_bytes(value: str, index: int) -> bytes:
    """A `known_speaker_references[]` entry: `data:<audio type>;base64,<bytes>` -> the bytes."""
    header, comma, payload = value.strip().partition(",")
    if not header.startswith("data:") or not comma or not header.endswith(";base64"):
        raise DiarizationError(
            f"known_speaker_references[{index}] must be a data URL, data:audio/...;base64,<audio bytes>",
            param=REFERENCES,
        )
    try:
        return base64.b64decode(payload, validate=True)
    except (binascii.Error, ValueError):
        raise DiarizationError(
            f"known_speaker_references[{index}] is not valid base64", param=REFERENCES
        ) from None


def _count(form: ReceivedForm, name: str) -> int | None:
    value = form.get(name)
    if value is None or not value.strip():
        return None
    try:
        return int(value.strip())
    except ValueError:
        raise DiarizationError(f"{name} must be a whole number, got {value!r}", param=name) from None


def known_speaker_names(form: ReceivedForm) -> tuple[str, ...]:
    return tuple(v.strip() for v in _list(form, "known_speaker_names") if v.strip())


def _list(form: ReceivedForm, name: str) -> list[str]:
    return form.fields.get(f"{name}[]", []) + form.fields.get(name, [])


def _bool(value: str | None, name: str) -> bool:
    if value is None or not value.strip():
        return False
    text = value.strip().lower()
    if text in ("true", "1", "yes", "on"):
        return True
    if text in ("false", "0", "no", "off"):
        return False
    raise BadRequestError(f"{name} must be true or false, got {value!r}", param=name)


def chunking_vad(form: ReceivedForm, server_vad: VadOptions) -> VadOptions | None:
    """`auto` -> the server's VAD settings; `server_vad` -> threshold / silence_duration_ms /
    prefix_padding_ms as our threshold / min_silence_ms / speech_pad_ms. Either way VAD runs whatever the
    file's length (unset: only past TALKIES_VAD_CHUNK_THRESHOLD)."""
    spec = _chunking_object(form)
    if spec is None:
        return None
    kind = spec.pop("type", None)
    if kind == "auto" and not spec:
        return server_vad
    if kind != "server_vad":
        raise BadRequestError(
            f"chunking_strategy must be 'auto' or an object with type 'server_vad', got type {kind!r}",
            param=CHUNKING,
        )
    extra = sorted(set(spec) - set(VAD_DEFAULTS))
    if extra:
        raise BadRequestError(
            f"chunking_strategy has unknown keys {', '.join(extra)}; valid: type, {', '.join(VAD_DEFAULTS)}",
            param=CHUNKING,
        )
    values = {**VAD_DEFAULTS, **spec}
    threshold = _number(values["threshold"], "threshold", 0.0, 1.0)
    silence = int(_number(values["silence_duration_ms"], "silence_duration_ms", 0, 60_000))
    padding = int(_number(values["prefix_padding_ms"], "prefix_padding_ms", 0, 10_000))
    return replace(
        server_vad, threshold=min(max(threshold, 0.01), 0.99), min_silence_ms=silence, speech_pad_ms=padding
    )


def _chunking_object(form: ReceivedForm) -> dict[str, Any] | None:
    bracketed = {
        key[len(CHUNKING) + 1 : -1]: values[-1]
        for key, values in form.fields.items()
        if key.startswith(f"{CHUNKING}[") and key.endswith("]") and values
    }
    plain = form.get(CHUNKING)
    if bracketed:
        if plain:
            raise BadRequestError(
                "send chunking_strategy either as a value or as [keys], not both", param=CHUNKING
            )
        return dict(bracketed)
    if plain is None or not plain.strip():
        return None
    text = plain.strip()
    if text == "auto":
        return {"type": "auto"}
    try:
        parsed = json.loads(text)
    except json.JSONDecodeError:
        raise BadRequestError(
            f"chunking_strategy must be 'auto' or a server_vad object (JSON), got {plain!r}", param=CHUNKING
        ) from None
    if parsed == "auto":
        return {"type": "auto"}
    if not isinstance(parsed, dict):
        raise BadRequestError("chunking_strategy must be 'auto' or a JSON object", param=CHUNKING)
    return parsed


def _number(value: Any, key: str, low: float, high: float) -> float:
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise BadRequestError(
            f"chunking_strategy {key} must be a number, got {value!r}", param=CHUNKING
        ) from None
    if not low <= number <= high:
        raise BadRequestError(
            f"chunking_strategy {key} must be in {low:g}..{high:g}, got {value!r}", param=CHUNKING
        )
    return number
