"""Server-sent-event responses: an error after the first byte becomes an `error` event, not a broken
stream (the status is 200 by then). Errors before it were raised while the stream started."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator

from talkies.api.cancel import ClosingStreamingResponse
from talkies.api.errors import envelope, error_code, status_for
from talkies.errors import TalkiesError
from talkies.formats.events import SSE_MEDIA_TYPE, error_event

log = logging.getLogger(__name__)


def sse_response(stream: AsyncIterator[bytes]) -> ClosingStreamingResponse:
    return ClosingStreamingResponse(
        _errors_as_events(stream),
        media_type=SSE_MEDIA_TYPE,
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
    )


async def _errors_as_events(stream: AsyncIterator[bytes]) -> AsyncIterator[bytes]:
    try:
        async for part in stream:
            yield part
    except TalkiesError as exc:
        _, kind = status_for(exc)
        log.warning("stream ended by an error after its first event: %s", exc.message)
        body = envelope(exc.message, kind, param=exc.param, code=error_code(exc))
        yield error_event(body["error"])  # type: ignore[arg-type]
    except Exception:
        log.exception("stream failed after its first event")
        yield error_event(
            {"message": "internal server error", "type": "server_error", "param": None, "code": None}
        )
    finally:
        aclose = getattr(stream, "aclose", None)
        if aclose is not None:
            await aclose()
