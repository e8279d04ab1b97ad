"""`POST /v1/audio/voices` and `DELETE /v1/audio/voices/{name}`: custom reference voices for Qwen3 base mode.

The form is OpenAI's (`name`, `audio_sample`; its `consent` id is accepted and not checked: this server
keeps no consent records) plus talkies' optional `transcript` (enables in-context cloning) and `language`.
The upload goes through the same reader and size cap as transcriptions (413 while reading); the audio
checks and the storage are in `talkies.services.voices`. `GET /v1/audio/voices` (the catalog) stays with
the speech routes in `talkies.api.audio`.
"""

from __future__ import annotations

import logging
from typing import Annotated, Any, cast

import anyio.to_thread
from fastapi import APIRouter, Depends, Request

from talkies.api.deps import SettingsDep
from talkies.api.responses import WRITE_GUARDED, errors
from talkies.api.uploads import receive_form
from talkies.errors import BadRequestError
from talkies.services.voices import VoiceService

router = APIRouter(tags=["voices"])
log = logging.getLogger(__name__)


def get_voice_service(request: Request) -> VoiceService:
    return cast(VoiceService, request.app.state.voices)


VoicesDep = Annotated[VoiceService, Depends(get_voice_service)]

_FORM_DOC = {
    "requestBody": {
        "required": True,
        "content": {
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "required": ["name", "audio_sample"],
                    "properties": {
                        "name": {"type": "string", "description": "voice name; may be nested (a/b/c)"},
                        "audio_sample": {"type": "string", "format": "binary", "description": "3-60 s"},
                        "transcript": {"type": "string", "description": "what the sample says (ICL)"},
                        "language": {"type": "string", "description": "e.g. English"},
                        "consent": {"type": "string", "description": "accepted, not checked"},
                    },
                }
            }
        },
    }
}


@router.post("/v1/audio/voices", openapi_extra=_FORM_DOC, responses=errors(WRITE_GUARDED, 400, 413))
async def create_voice(request: Request, settings: SettingsDep, voices: VoicesDep) -> dict[str, Any]:
    async with receive_form(
        request, max_file_bytes=settings.max_upload_bytes, tmp_dir=settings.data_dir / "tmp"
    ) as form:
        name = form.get("name")
        sample = form.files.get("audio_sample")
        if not name:
            raise BadRequestError("give the voice a 'name'", param="name")
        if sample is None:
            raise BadRequestError("send the reference recording as 'audio_sample'", param="audio_sample")
        created = await anyio.to_thread.run_sync(
            voices.create_sync, name, sample.path, form.get("transcript"), form.get("language")
        )
        mode = "ICL" if form.get("transcript") else "x-vector only"
    log.info("custom voice %r stored (%s)", created["name"], mode)
    return created


@router.delete("/v1/audio/voices/{name:path}", responses=errors(WRITE_GUARDED, 400, 404, 422))
async def delete_voice(name: str, voices: VoicesDep) -> dict[str, Any]:
    deleted = await anyio.to_thread.run_sync(voices.delete_sync, name)
    log.info("custom voice %r deleted", deleted["name"])
    return deleted
