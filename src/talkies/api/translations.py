"""`POST /v1/audio/translations`: speech in any language Whisper knows -> English text (OpenAI's API).

Multipart fields as OpenAI's: `file` (or `file_path`: a staged /v1/files path or a URL, like the
transcription endpoint), `model`, `prompt` (in English), `response_format` (json, text, srt,
verbose_json, vtt) and `temperature`. `language` (the spoken language) is accepted as an extra, to skip
detection. A model that cannot translate answers 400 naming the models that can.
"""

from __future__ import annotations

from typing import Annotated, Any

import anyio.to_thread
from fastapi import APIRouter, Depends, Request, Response
from fastapi.exceptions import RequestValidationError
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from talkies.api.audio import get_transcription_service, resolve_file_path
from talkies.api.cancel import cancel_on_disconnect
from talkies.api.deps import SettingsDep, note_model
from talkies.api.uploads import ReceivedForm, receive_form
from talkies.errors import BadRequestError
from talkies.services.transcription import TranscriptionOptions
from talkies.services.translation import TranslationService

router = APIRouter(tags=["audio"])


def get_translation_service(request: Request) -> TranslationService:
    return TranslationService(get_transcription_service(request))  # a thin view: nothing to keep


TranslationDep = Annotated[TranslationService, Depends(get_translation_service)]


class TranslationForm(BaseModel):
    model_config = ConfigDict(extra="ignore")

    model: str = Field(min_length=1)
    file_path: str | None = None
    prompt: str | None = None
    response_format: str | None = None
    temperature: float | None = Field(None, ge=0.0, le=2.0)
    language: str | None = None

    @field_validator("language", "response_format", "prompt", "file_path", mode="before")
    @classmethod
    def _blank_is_none(cls, value: Any) -> Any:
        return None if isinstance(value, str) and not value.strip() else value


def parse_translation_form(form: ReceivedForm) -> TranslationForm:
    raw: dict[str, Any] = {k: v[-1] for k, v in form.fields.items() if v}
    try:
        return TranslationForm.model_validate(raw)
    except ValidationError as exc:
        errors = [{**err, "loc": ("body", *err["loc"])} for err in exc.errors(include_url=False)]
        raise RequestValidationError(errors) from None


_FORM_DOC: dict[str, Any] = {
    "requestBody": {
        "required": True,
        "content": {
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "required": ["model"],
                    "properties": {
                        "file": {"type": "string", "format": "binary"},
                        **{
                            name: {"type": "string"}
                            for name in ("file_path", "model", "prompt", "response_format", "language")
                        },
                        "temperature": {"type": "number"},
                    },
                }
            }
        },
    }
}


@router.post("/v1/audio/translations", openapi_extra=_FORM_DOC)
async def create_translation(request: Request, settings: SettingsDep, service: TranslationDep) -> Response:
    async with receive_form(
        request, max_file_bytes=settings.max_upload_bytes, tmp_dir=settings.data_dir / "tmp"
    ) as form:
        fields = parse_translation_form(form)
        note_model(request, fields.model)
        upload = form.files.get("file")
        if upload is not None and fields.file_path:
            raise BadRequestError("send either 'file' or 'file_path', not both", param="file")
        asked = TranscriptionOptions(
            model=fields.model,
            response_format=fields.response_format,
            language=fields.language,
            prompt=fields.prompt,
            temperature=fields.temperature,
        )
        options = await anyio.to_thread.run_sync(service.validate, asked)  # may read the snapshot
        if upload is not None:
            path = upload.path
        elif fields.file_path:
            path = await resolve_file_path(request, fields.file_path)
        else:
            raise BadRequestError("no audio: send a 'file' (or a 'file_path')", param="file")
        transcript = await cancel_on_disconnect(request, service.translate_file(path, options))
    return Response(transcript.body, media_type=transcript.content_type)
