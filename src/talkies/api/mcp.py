"""The MCP endpoint at `/v1/mcp`: Streamable HTTP via the official `mcp` package, same services as HTTP.

The MCP server is stateless and answers plain JSON (no session state to lose behind a load balancer, nothing
held between calls). It is added as a plain route, not a mount, so the bare path `/v1/mcp` answers without a
307 to `/v1/mcp/`, and it sits behind the app's bearer-auth middleware like every other route. Tools call
the same services and pool as the HTTP routes, so limits, queueing and eviction are shared. A domain error
becomes an MCP tool error (`isError: true`) carrying the same message the HTTP API would answer.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import functools
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from typing import TYPE_CHECKING, Any, ParamSpec, TypeVar

import anyio.to_thread
from fastapi import FastAPI
from starlette.routing import Route

from talkies.api.errors import status_for
from talkies.api.mcp_limits import BodyLimit, body_limit
from talkies.api.system import held_remotely
from talkies.errors import BadRequestError, PayloadTooLargeError, TalkiesError
from talkies.netpolicy import HostPolicy
from talkies.pool import ModelPool
from talkies.registry import Registry
from talkies.services.diarization import SpeakerRequest
from talkies.services.downloads import Downloader, using_file_path
from talkies.services.files import FileStore
from talkies.services.speech import SpeechOptions, SpeechService
from talkies.services.staged_speech import speak_to_file
from talkies.services.transcription import TranscriptionOptions, TranscriptionService

if TYPE_CHECKING:
    from mcp.server.mcpserver import MCPServer
    from mcp.server.streamable_http_manager import StreamableHTTPSessionManager
    from mcp.server.transport_security import TransportSecuritySettings

MCP_PATH = "/v1/mcp"
log = logging.getLogger(__name__)
P = ParamSpec("P")
T = TypeVar("T")


def _tool_errors(fn: Callable[P, Awaitable[T]]) -> Callable[P, Awaitable[T]]:
    """Domain errors -> MCP tool errors with the message the HTTP API would give (and its status)."""
    from mcp.server.mcpserver.exceptions import ToolError

    @functools.wraps(fn)
    async def wrapper(*args: P.args, **kwargs: P.kwargs) -> T:
        try:
            return await fn(*args, **kwargs)
        except TalkiesError as exc:
            status, _ = status_for(exc)
            raise ToolError(f"{exc.message} (HTTP {status})") from None

    return wrapper


class _Tools:
    """The tool implementations; `app.state` is read per call (services are built in the lifespan)."""

    def __init__(self, app: FastAPI) -> None:
        self.app = app

    @property
    def files(self) -> FileStore:
        return self.app.state.files  # type: ignore[no-any-return]

    @property
    def downloads(self) -> Downloader:
        return self.app.state.downloads  # type: ignore[no-any-return]

    @property
    def pool(self) -> ModelPool:
        return self.app.state.pool  # type: ignore[no-any-return]

    @property
    def registry(self) -> Registry:
        return self.app.state.registry  # type: ignore[no-any-return]

    async def list_models(self) -> dict[str, Any]:
        """Every configured model, ASR and TTS, with its modality and whether it is loaded now."""
        models = []
        resident = await held_remotely(self.app.state.remote)  # on Ray Serve: the model servers' models
        for spec in self.registry.models.values():
            reason = self.pool.unavailable_reason(spec.slug)
            models.append(
                {
                    "slug": spec.slug,
                    "modality": spec.modality,
                    "executor": spec.executor,
                    "default_source_lang": spec.default_source_lang,
                    "default_target_lang": spec.default_target_lang,
                    "default_task": spec.default_task if spec.modality == "asr" else None,
                    "default_voice": spec.default_voice,
                    "languages": list(spec.languages),
                    "default": self.registry.default_slug(spec.kind) == spec.slug,
                    "loaded": self.pool.is_loaded(spec.slug) or spec.slug in resident,
                    "available": reason is None,
                    "unavailable_reason": reason,
                }
            )
        return {"models": models}

    async def list_files(self) -> dict[str, Any]:
        return {"files": await self.files.list()}

    async def put_file(self, path: str, content_base64: str) -> dict[str, Any]:
        cap = self.files.max_upload_bytes
        if len(content_base64) > 4 * (cap // 3 + 1) + 8:  # refused before decoding a byte
            raise PayloadTooLargeError(f"decoded content exceeds TALKIES_MAX_UPLOAD_BYTES ({cap} bytes)")
        data = await anyio.to_thread.run_sync(_decode_base64, content_base64)
        return await anyio.to_thread.run_sync(self.files.put_bytes_sync, path, data)

    async def get_file(self, path: str) -> dict[str, Any]:
        opened = await self.files.open_for_read(path)
        cap = self.files.max_upload_bytes
        if opened.size > cap:
            opened.close()
            raise PayloadTooLargeError(
                f"{path} is {opened.size} bytes, over TALKIES_MAX_UPLOAD_BYTES ({cap} bytes); "
                f"fetch it with GET /v1/files/{path} instead"
            )
        encoded = await anyio.to_thread.run_sync(lambda: base64.b64encode(opened.read_all()).decode("ascii"))
        return {
            "path": path,
            "size": opened.size,
            "content_type": opened.content_type,
            "content_base64": encoded,
        }

    async def delete_file(self, path: str) -> dict[str, Any]:
        await self.files.delete(path)
        return {"path": path, "deleted": True}

    @property
    def transcription(self) -> TranscriptionService:
        return self.app.state.transcription  # type: ignore[no-any-return]

    @property
    def speech(self) -> SpeechService:
        return self.app.state.speech  # type: ignore[no-any-return]

    async def transcribe(
        self,
        file_path: str,
        model: str,
        language: str | None,
        response_format: str,
        diarization: bool,
        num_speakers: int | None = None,
    ) -> str:
        options = TranscriptionOptions(
            model=model,
            response_format=response_format,
            language=language,
            diarization=diarization,
            speakers=SpeakerRequest(num_speakers=num_speakers),
        )
        self.transcription.validate(options)  # unknown model, wrong modality, bad format: before any fetch
        async with using_file_path(file_path, files=self.files, downloads=self.downloads) as path:
            transcript = await self.transcription.transcribe_file(path, options)
        return transcript.body

    async def speak(
        self, text: str, model: str, voice: str | None, response_format: str, speed: float, path: str | None
    ) -> dict[str, Any]:
        options = SpeechOptions(
            model=model, input=text, voice=voice, response_format=response_format, speed=speed
        )
        staged = await speak_to_file(self.speech, self.files, options, path)
        return {
            "path": staged.path,
            "format": staged.format,
            "content_type": staged.content_type,
            "size": staged.size,
            "duration": round(staged.duration, 3),
        }

    async def list_voices(self, model: str | None) -> dict[str, Any]:
        entries = await anyio.to_thread.run_sync(self.speech.voices, model)
        return {
            "voices": [
                {"voice": e.voice, "model": e.model, "default": e.default, "origin": e.origin}
                for e in entries
            ]
        }


def _decode_base64(text: str) -> bytes:
    text = "".join(text.split())  # MIME-style line breaks are common; anything else must be base64
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError) as exc:
        message = f"content_base64 is not valid base64: {exc}"
        raise BadRequestError(message, param="content_base64") from None


def build_mcp_server(app: FastAPI) -> MCPServer:
    """The MCP server with talkies' eight tools bound to `app`'s services."""
    from mcp.server.mcpserver import MCPServer
    from mcp_types import ToolAnnotations

    tools = _Tools(app)
    server: MCPServer = MCPServer(
        name="talkies",
        instructions=(
            "Speech tools: transcribe audio (a staged path or an http(s) URL) and synthesize speech into the "
            "staging area. Stage files with put_file, or over HTTP with PUT /v1/files/{path} for big ones."
        ),
    )
    read_only = ToolAnnotations(read_only_hint=True)

    @server.tool(annotations=read_only)
    @_tool_errors
    async def list_models() -> dict[str, Any]:
        """List the configured models, speech-to-text (modality "asr") and text-to-speech ("tts"), with
        their executor, default languages / task / voice, whether each is the default of its kind (used when
        a tool call names no model) and whether each is loaded right now."""
        return await tools.list_models()

    @server.tool()
    @_tool_errors
    async def transcribe(
        file_path: str,
        model: str = "",
        language: str | None = None,
        response_format: str = "json",
        diarization: bool = False,
        num_speakers: int | None = None,
    ) -> str:
        """Transcribe audio. `file_path` is a path in the staging area (see list_files / put_file) or an
        http(s) URL (downloaded once and cached server-side). `response_format`: json, verbose_json, text,
        srt, vtt or diarized_json; JSON formats come back as a JSON-encoded string, the others raw.
        diarized_json shows who spoke when: segments with a `speaker` (A, B, ... in order of appearance) and
        text as `A: ...` lines; a mono file is diarized by voice when the server has a diarization model
        (`num_speakers` tells it how many, when known), a stereo file has a speaker per channel.
        `diarization` with json / text / ... needs a stereo file (left/right channels become speakers L/R).
        Without `model`: the server's default speech-to-text model."""
        return await tools.transcribe(file_path, model, language, response_format, diarization, num_speakers)

    @server.tool(annotations=read_only)
    @_tool_errors
    async def list_files() -> dict[str, Any]:
        """List staged files: path, size in bytes, modified time (UTC)."""
        return await tools.list_files()

    @server.tool()
    @_tool_errors
    async def put_file(path: str, content_base64: str) -> dict[str, Any]:
        """Stage a file at `path` (relative to the staging root) from base64 content. The decoded size is
        capped at TALKIES_MAX_UPLOAD_BYTES; for big files use PUT /v1/files/{path} over HTTP instead."""
        return await tools.put_file(path, content_base64)

    @server.tool(annotations=read_only)
    @_tool_errors
    async def get_file(path: str) -> dict[str, Any]:
        """Read a staged file as base64, capped at TALKIES_MAX_UPLOAD_BYTES (big: GET /v1/files/{path})."""
        return await tools.get_file(path)

    @server.tool(annotations=ToolAnnotations(destructive_hint=True))
    @_tool_errors
    async def delete_file(path: str) -> dict[str, Any]:
        """Delete a staged file and prune its empty parent directories (never the staging root)."""
        return await tools.delete_file(path)

    @server.tool()
    @_tool_errors
    async def speak(
        text: str,
        model: str = "",
        voice: str | None = None,
        response_format: str = "wav",
        speed: float = 1.0,
        path: str | None = None,
    ) -> dict[str, Any]:
        """Synthesize `text` with a text-to-speech model into the staging area. Returns the staged `path`
        (default speech/<time>-<id>.<format>), its `format`, `size` and `duration` in seconds; read it
        with get_file or GET /v1/files/{path}. `response_format`: wav, mp3, flac, opus, aac or pcm. Without
        `model`: the server's default text-to-speech model."""
        return await tools.speak(text, model, voice, response_format, speed, path)

    @server.tool(annotations=read_only)
    @_tool_errors
    async def list_voices(model: str | None = None) -> dict[str, Any]:
        """List the voices of one text-to-speech model, or of every TTS model when `model` is omitted."""
        return await tools.list_voices(model)

    return server


def mcp_transport_security(hosts: HostPolicy, cors_origins: Sequence[str]) -> TransportSecuritySettings:
    """The SDK's DNS-rebinding protection, on, with the app's Host list (`HostPolicy`) and, as allowed
    origins, TALKIES_CORS_ORIGINS plus the allowed hosts' own origins. It is off only where the app's guard
    answers anything anyway: any Host allowed (TALKIES_ALLOWED_HOSTS=*, or a token on a routable bind) or
    any Origin (TALKIES_CORS_ORIGINS=*); the SDK cannot express those."""
    from mcp.server.transport_security import TransportSecuritySettings

    if hosts.any_host or "*" in cors_origins:
        return TransportSecuritySettings(enable_dns_rebinding_protection=False)
    allowed_hosts = hosts.mcp_hosts()
    origins = [o.rstrip("/") for o in cors_origins]
    for host in allowed_hosts:
        origins += [f"http://{host}", f"https://{host}"]
    return TransportSecuritySettings(
        enable_dns_rebinding_protection=True, allowed_hosts=allowed_hosts, allowed_origins=origins
    )


class McpEndpoint:
    """The ASGI app behind `/v1/mcp`, plus the session manager the app's lifespan must run."""

    def __init__(self, app: FastAPI, hosts: HostPolicy, cors_origins: Sequence[str]) -> None:
        self.server = build_mcp_server(app)
        # Stateless + JSON: every POST is self-contained. The transport's own Host / Origin checks use the
        # same list as the app's guard (HostOriginGuard), which runs first.
        self.security = mcp_transport_security(hosts, cors_origins)
        # The body limit follows the upload cap (put_file's content is base64); over it, BodyLimit answers
        # a tool error naming the limit instead of the SDK's bare 413.
        max_upload = app.state.settings.max_upload_bytes
        self.server.streamable_http_app(
            streamable_http_path=MCP_PATH,
            stateless_http=True,
            json_response=True,
            transport_security=self.security,
            max_request_body_size=body_limit(max_upload),
        )
        self.session_manager: StreamableHTTPSessionManager = self.server.session_manager
        self._asgi = BodyLimit(self.session_manager.asgi_app, max_upload)

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        await self._asgi(scope, receive, send)

    @contextlib.asynccontextmanager
    async def running(self) -> AsyncIterator[None]:
        async with self.session_manager.run():
            yield


def install_mcp(app: FastAPI, hosts: HostPolicy, cors_origins: Sequence[str]) -> McpEndpoint | None:
    """Route `/v1/mcp` (exact path) to the MCP endpoint; the caller runs `.running()` in its lifespan.
    Without the `mcp` extra installed there is no endpoint (None)."""
    try:
        import mcp.server.mcpserver  # noqa: F401
    except ImportError:
        log.warning("the mcp package is not installed (pip install 'talkies[mcp]'): no /v1/mcp endpoint")
        return None
    endpoint = McpEndpoint(app, hosts, cors_origins)
    app.router.routes.append(Route(MCP_PATH, endpoint=endpoint, methods=["GET", "POST", "DELETE"]))
    return endpoint
