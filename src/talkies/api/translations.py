"""`POST /v1/audio/translations`: speech in any language Whisper knows -> English text (OpenAI's API).

Multipart fields as OpenAI's: `file` (or `file_path`: a staged /v1/files path or a URL, like the
transcription endpoint), `model`, `prompt` (in English), `response_format` (json, text, srt,
verbose_json, vtt) and `temperature`. `language` (the spoken language) is accepted as an extra, to skip
detection. A model that cannot translate answers 400 naming the models that can.
"""

from __future__ import annotations

from typing import Annotated

import anyio.to_thread
from fastapi import APIRouter, Depends, Request, Response

from talkies.api.audio import (
    TRANSCRIPT_ANSWERS,
    AudioForm,
    check_single_source,
    get_transcription_service,
    multipart_form_doc,
    on_audio,
    parse_audio_form,
    receive_audio_form,
)
from talkies.api.cancel import cancel_on_disconnect
from talkies.api.deps import SettingsDep, note_model
from talkies.api.responses import media
from talkies.formats.transcript import TRANSCRIPT_FORMATS
from talkies.services.transcription import TranscriptionOptions
from talkies.services.translation import TranslationService

router = APIRouter(tags=["audio"])


def get_translation_service(request: Request) -> TranslationService:
    return TranslationService(get_transcription_service(request))  # a thin view: nothing to keep


TranslationDep = Annotated[TranslationService, Depends(get_translation_service)]


class TranslationForm(AudioForm):
    """OpenAI's translation fields (`language` names the source; the output is English)."""


_FORM_DOC = multipart_form_doc()


@router.post(
    "/v1/audio/translations",
    openapi_extra=_FORM_DOC,
    response_class=Response,
    responses={
        **media(TRANSCRIPT_FORMATS.values(), "The English transcript in `response_format`", binary=False),
        **TRANSCRIPT_ANSWERS,
    },
)
async def create_translation(request: Request, settings: SettingsDep, service: TranslationDep) -> Response:
    async with receive_audio_form(request, settings, service.transcription) as form:
        fields = parse_audio_form(form, TranslationForm)
        note_model(request, fields.model)
        check_single_source(form, fields)
        asked = TranscriptionOptions(
            model=fields.model,
            response_format=fields.response_format,
            language=fields.language,
            prompt=fields.prompt,
            temperature=fields.temperature,
        )
        options = await anyio.to_thread.run_sync(service.validate, asked)  # may read the snapshot
        done = on_audio(request, form, fields, lambda path: service.translate_file(path, options))
        transcript = await cancel_on_disconnect(request, done)
    return Response(transcript.body, media_type=transcript.content_type)
