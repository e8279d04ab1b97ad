"""`POST /v1/audio/transcriptions`, `POST /v1/audio/speech`, `GET /v1/audio/voices`.

Requests are parsed and validated here, then handed to the services on app.state; responses are
mapped back. The transcription form is read by `talkies.api.uploads` (streamed to disk, 413 while
reading), then validated with a pydantic model so a wrong type answers FastAPI's usual 422.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from contextlib import AbstractAsyncContextManager
from pathlib import Path
from typing import Annotated, Any, Literal, TypeVar, cast

import anyio.to_thread
from fastapi import APIRouter, Depends, Query, Request, Response
from fastapi.exceptions import RequestValidationError
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from talkies.api.cancel import ClosingStreamingResponse, cancel_on_disconnect
from talkies.api.deps import SettingsDep, note_model
from talkies.api.openai_fields import REFERENCES, read_openai_fields
from talkies.api.responses import GUARDED, RUNS_MODEL, WRITE_GUARDED, SpeechModelList, body, errors, media
from talkies.api.streaming import sse_response
from talkies.api.system import held_remotely, model_card
from talkies.api.uploads import ReceivedForm, receive_form
from talkies.audio.encode import SPEECH_FORMATS
from talkies.errors import BadRequestError
from talkies.formats.events import SSE_MEDIA_TYPE
from talkies.formats.transcript import TRANSCRIPT_FORMATS
from talkies.services.diarization import MAX_REFERENCES, MAX_SPEAKER_HINT
from talkies.services.speech import SpeechOptions, SpeechService
from talkies.services.streams import open_transcript_stream
from talkies.services.transcription import TranscriptionOptions, TranscriptionService
from talkies.settings import Settings

router = APIRouter(tags=["audio"])


def get_transcription_service(request: Request) -> TranscriptionService:
    return cast(TranscriptionService, request.app.state.transcription)


def get_speech_service(request: Request) -> SpeechService:
    return cast(SpeechService, request.app.state.speech)


TranscriptionDep = Annotated[TranscriptionService, Depends(get_transcription_service)]
SpeechDep = Annotated[SpeechService, Depends(get_speech_service)]


class AudioForm(BaseModel):
    """Multipart fields shared by transcriptions and translations (the `file` part is handled by the
    upload reader)."""

    model_config = ConfigDict(extra="ignore")

    model: str = ""  # empty: the default speech-to-text model (Open WebUI sends an empty field)
    file_path: str | None = None
    language: str | None = None
    response_format: str | None = None
    prompt: str | None = None
    temperature: float | None = Field(None, ge=0.0, le=2.0)

    @field_validator("language", "response_format", "prompt", "file_path", mode="before")
    @classmethod
    def _blank_is_none(cls, value: Any) -> Any:
        return None if isinstance(value, str) and not value.strip() else value


class TranscriptionForm(AudioForm):
    """The contract's transcription fields."""

    timestamp_granularities: list[Literal["word", "segment"]] = []
    diarization: bool = False


FormT = TypeVar("FormT", bound=AudioForm)
T = TypeVar("T")


def parse_audio_form(form: ReceivedForm, model: type[FormT]) -> FormT:
    """Validate the text fields; errors answer 422 like any FastAPI body."""
    raw: dict[str, Any] = {k: v[-1] for k, v in form.fields.items() if v}
    grains = form.fields.get("timestamp_granularities[]", []) + form.fields.get("timestamp_granularities", [])
    raw["timestamp_granularities"] = grains
    try:
        return model.model_validate(raw)
    except ValidationError as exc:
        errors = [{**err, "loc": ("body", *err["loc"])} for err in exc.errors(include_url=False)]
        raise RequestValidationError(errors) from None


def parse_transcription_form(form: ReceivedForm) -> TranscriptionForm:
    return parse_audio_form(form, TranscriptionForm)


def receive_audio_form(
    request: Request, settings: Settings, service: TranscriptionService, *, references: bool = False
) -> AbstractAsyncContextManager[ReceivedForm]:
    """The transcription / translation form, streamed to disk under the upload cap. The `model` field
    is checked for a full queue as soon as it is read (the official SDKs send fields before the file),
    so a 429 comes before the upload is stored. `references`: known-speaker data URLs may each take up to
    TALKIES_MAX_SPEAKER_REFERENCE_BYTES (transcriptions only; other text fields stay at 64 KiB)."""

    def on_field(name: str, value: str) -> None:
        if name == "model":
            service.admit(value)

    size = settings.max_speaker_reference_bytes
    return receive_form(
        request,
        max_file_bytes=settings.max_upload_bytes,
        tmp_dir=settings.data_dir / "tmp",
        on_field=on_field,
        field_limits={f"{REFERENCES}[]": size, REFERENCES: size} if references else None,
        extra_bytes=MAX_REFERENCES * size if references else 0,
    )


def check_single_source(form: ReceivedForm, fields: AudioForm) -> None:
    if form.files.get("file") is not None and fields.file_path:
        raise BadRequestError("send either 'file' or 'file_path', not both", param="file")


async def on_audio(
    request: Request, form: ReceivedForm, fields: AudioForm, work: Callable[[Path], Awaitable[T]]
) -> T:
    """`work(path)` on the audio file: the upload, or what `file_path` names (a staged path, or a URL
    fetched here and leased from the download cache until `work` returns, so another request's download
    cannot evict it in between). Await it inside `cancel_on_disconnect`: a hang-up then cancels the
    fetch too, and a wait behind another request's download of the same URL."""
    upload = form.files.get("file")
    if upload is not None:
        return await work(upload.path)
    if not fields.file_path:
        raise BadRequestError("no audio: send a 'file' (or a 'file_path')", param="file")
    # An app that serves `/v1/files` puts `using_file_path` on app.state.
    use_file_path = getattr(request.app.state, "use_file_path", None)
    if use_file_path is None:
        raise BadRequestError("file_path is not supported by this server; upload a 'file'", param="file_path")
    source = cast(AbstractAsyncContextManager[Path], use_file_path(fields.file_path))
    async with source as path:
        return await work(path)


def multipart_form_doc(**extra_properties: Any) -> dict[str, Any]:
    """OpenAPI for a form read by `receive_form` (FastAPI cannot see fields it does not parse itself)."""
    text_fields = ("file_path", "model", "language", "response_format", "prompt")
    properties: dict[str, Any] = {
        "file": {"type": "string", "format": "binary"},
        **{name: {"type": "string"} for name in text_fields},
        "temperature": {"type": "number"},
        **extra_properties,
    }
    schema = {"type": "object", "required": ["model"], "properties": properties}
    return {"requestBody": {"required": True, "content": {"multipart/form-data": {"schema": schema}}}}


_TRANSCRIPTION_FORM_DOC = multipart_form_doc(
    **{
        "timestamp_granularities[]": {
            "type": "array",
            "items": {"type": "string", "enum": ["word", "segment"]},
        },
        "diarization": {"type": "boolean"},
        "known_speaker_names[]": {"type": "array", "items": {"type": "string"}},
        "known_speaker_references[]": {
            "type": "array",
            "items": {"type": "string"},
            "maxItems": MAX_REFERENCES,
        },
        "num_speakers": {"type": "integer", "minimum": 1, "maximum": MAX_SPEAKER_HINT},
        "min_speakers": {"type": "integer", "minimum": 1, "maximum": MAX_SPEAKER_HINT},
        "max_speakers": {"type": "integer", "minimum": 1, "maximum": MAX_SPEAKER_HINT},
        "acoustic_diarization": {"type": "boolean"},
    }
)


TRANSCRIPT_ANSWERS = errors(WRITE_GUARDED, RUNS_MODEL, 400, 413, 422)
"""What a transcription or translation can answer besides its transcript (`receive_form`: 400, 413)."""


@router.post(
    "/v1/audio/transcriptions",
    openapi_extra=_TRANSCRIPTION_FORM_DOC,
    response_class=Response,
    responses={
        **media(
            [*TRANSCRIPT_FORMATS.values(), SSE_MEDIA_TYPE],
            "The transcript in `response_format`, or events with stream=true",
            binary=False,
        ),
        **TRANSCRIPT_ANSWERS,
    },
)
async def create_transcription(
    request: Request, settings: SettingsDep, service: TranscriptionDep
) -> Response:
    async with receive_audio_form(request, settings, service, references=True) as form:
        fields = parse_transcription_form(form)
        note_model(request, fields.model)
        check_single_source(form, fields)
        extra = read_openai_fields(form, service.vad_options)
        options = TranscriptionOptions(
            model=fields.model,
            response_format=fields.response_format,
            language=fields.language,
            prompt=fields.prompt,
            temperature=fields.temperature,
            diarization=fields.diarization,
            word_timestamps="word" in fields.timestamp_granularities,
            logprobs="logprobs" in extra.include,
            vad=extra.vad,
            speaker_names=extra.speaker_names,
            speakers=extra.speakers,
        )
        service.validate(options)
        if extra.stream:
            opened = on_audio(
                request, form, fields, lambda path: open_transcript_stream(service, path, options)
            )
            events = await cancel_on_disconnect(request, opened)
            return sse_response(events)  # the upload is not needed any more: the audio is decoded
        done = on_audio(request, form, fields, lambda path: service.transcribe_file(path, options))
        transcript = await cancel_on_disconnect(request, done)
    return Response(transcript.body, media_type=transcript.content_type)


class SpeechBody(BaseModel):
    """`POST /v1/audio/speech`; unknown keys are ignored, as OpenAI's SDKs may send more."""

    model_config = ConfigDict(extra="ignore")

    model: str = ""  # empty: the default text-to-speech model
    input: str
    voice: str | None = None
    response_format: str | None = None
    speed: float = 1.0
    instructions: str | None = None
    language: str | None = None
    temperature: float | None = Field(None, ge=0.0, le=2.0)
    top_k: int | None = Field(None, ge=1, le=1000)
    top_p: float | None = Field(None, ge=0.0, le=1.0)
    repetition_penalty: float | None = Field(None, ge=0.5, le=2.0)
    max_new_tokens: int | None = Field(None, ge=1, le=2048)
    do_sample: bool | None = None
    stream_format: str | None = None


_SAMPLING_KNOBS = ("temperature", "top_k", "top_p", "repetition_penalty", "max_new_tokens", "do_sample")


@router.post(
    "/v1/audio/speech",
    response_class=Response,
    responses={
        **media(
            [*SPEECH_FORMATS.values(), SSE_MEDIA_TYPE],
            "Audio in `response_format` (mp3 by default), or events with stream_format=sse",
            binary=True,
        ),
        **errors(WRITE_GUARDED, RUNS_MODEL, 400, 422),
    },
)
async def create_speech(body: SpeechBody, request: Request, service: SpeechDep) -> ClosingStreamingResponse:
    """Audio bytes as synthesized (`stream_format=audio`, the default) or OpenAI's server-sent events
    (`stream_format=sse`: `speech.audio.delta` with base64 chunks of `response_format`, then
    `speech.audio.done`). Both start once the first chunk is encoded."""
    note_model(request, body.model)
    extra = {k: getattr(body, k) for k in _SAMPLING_KNOBS if getattr(body, k) is not None}
    options = SpeechOptions(
        model=body.model,
        input=body.input,
        voice=body.voice,
        response_format=body.response_format,
        speed=body.speed,
        instructions=body.instructions,
        language=body.language,
        extra=extra,
        stream_format=body.stream_format,
    )
    plan = await anyio.to_thread.run_sync(service.validate, options)  # a catalog may read disk
    if plan.sse:
        return sse_response(await cancel_on_disconnect(request, service.open_events(plan)))
    stream = await cancel_on_disconnect(request, service.open_stream(plan))
    return ClosingStreamingResponse(stream, media_type=plan.content_type)


@router.get("/v1/audio/voices", responses=errors(GUARDED, 400, 404, 422))
async def list_voices(service: SpeechDep, model: Annotated[str | None, Query()] = None) -> dict[str, Any]:
    """Voices across TTS models. `id` / `name` are what Open WebUI reads; `aliases` are the other names
    (OpenAI's `alloy`, ...) that speak with this voice on this model."""
    entries = await anyio.to_thread.run_sync(service.voices, model)
    voices = []
    for entry in entries:
        item: dict[str, Any] = {
            "id": entry.voice,
            "name": entry.voice,
            "voice": entry.voice,
            "model": entry.model,
            "default": entry.default,
            "aliases": list(entry.aliases),
        }
        if entry.origin is not None:
            item["origin"] = entry.origin
        voices.append(item)
    return {"object": "list", "voices": voices}


@router.get("/v1/audio/models", response_model=None, responses={**body(SpeechModelList), **errors(GUARDED)})
async def list_speech_models(request: Request) -> dict[str, Any]:
    """Text-to-speech models as Open WebUI lists them: `{"models": [{"id": ...}]}`."""
    pool = request.app.state.pool
    specs = [spec for spec in pool.registry.models.values() if spec.kind == "tts"]
    held = await held_remotely(request.app.state.remote)
    pulls = request.app.state.pulls
    return {"object": "list", "models": [model_card(spec, pool, pulls, held) for spec in specs]}
