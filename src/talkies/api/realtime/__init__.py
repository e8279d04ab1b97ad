"""Realtime transcription over WebSocket (OpenAI Realtime API, transcription sessions; docs/realtime.md).

`endpoint` is the route and the connection (limits, writer), `session` one session's events and its
transcription, `buffer` the input audio buffer and its turns, `wire` the session shapes and events.
"""

from talkies.api.realtime.endpoint import SessionCount, router

__all__ = ["SessionCount", "router"]
