"""Wyoming protocol server (Home Assistant's voice pipeline) in the talkies process.

Started with the app when `TALKIES_WYOMING_URI` is set (`tcp://0.0.0.0:10300`, `unix:///path`). One
connection is one task; every request goes through the same services, pool, queue limits and memory
budget as HTTP. Framing and events come from the `wyoming` package; the reader is our own so that a
header line, a data block or a payload larger than the limits is refused with an `error` event instead of
being read into memory.

- `describe` -> `info`: one ASR program (the enabled ASR models) and one TTS program (every TTS model's
  voices, named `<model>/<voice>`), rebuilt on each `describe` so voices added at run time appear.
- `transcribe` (optional model `name`, `language`) -> `audio-start` / `audio-chunk`... / `audio-stop` ->
  (`transcript-start`, one `transcript-chunk` per segment) -> `transcript` -> `transcript-stop`.
  Audio of any rate / width / channels is converted to 16 kHz mono once, at `audio-stop`.
- `synthesize` -> exactly one `audio-start`, chunks as sentences are synthesized, one `audio-stop`
  (Home Assistant stops reading at the first `audio-stop`). Streaming: `synthesize-start` /
  `synthesize-chunk`... / `synthesize-stop` -> one start/chunks/stop per completed sentence, then
  `synthesize-stopped`; a `synthesize` inside a stream (the backwards-compatible copy) is ignored.
- Every failure answers `error{text, code}`; the connection stays open unless the stream is unreadable.

Bounds (nothing a client sends can stall the event loop or grow without limit): at most
TALKIES_WYOMING_MAX_CONNECTIONS connections (one more is answered `error` and closed), every read ends
after TALKIES_WYOMING_IDLE_TIMEOUT without data, frames are size-capped (`frames`), and what a connection
holds between events is capped (`buffers`). The connection itself is `connection.Connection`; the
catalog (`describe`, voices, default models) is `catalog.WyomingCatalog`.

Wyoming has no authentication: bind it to an interface only trusted clients reach (docs/wyoming.md).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import TYPE_CHECKING, Any
from urllib.parse import urlparse

from talkies.api.wyoming.catalog import WyomingCatalog
from talkies.api.wyoming.connection import Connection
from talkies.api.wyoming.frames import MAX_HEADER_BYTES
from talkies.errors import ConfigError

if TYPE_CHECKING:
    from talkies.pool import ModelPool
    from talkies.registry import Registry
    from talkies.services.speech import SpeechService
    from talkies.services.transcription import TranscriptionService
    from talkies.settings import Settings

log = logging.getLogger("talkies.api.wyoming")


class WyomingServer:
    """Owns the listening socket; `start()` / `stop()` run with the app's lifespan."""

    def __init__(
        self,
        uri: str,
        *,
        registry: Registry,
        pool: ModelPool,
        transcription: TranscriptionService,
        speech: SpeechService,
        settings: Settings,
    ) -> None:
        self.uri = uri
        self.registry = registry
        self.pool = pool
        self.transcription = transcription
        self.speech = speech
        self.settings = settings
        self.catalog = WyomingCatalog(registry, pool, speech, settings)
        self._server: asyncio.Server | None = None
        self._connections: set[asyncio.Task[None]] = set()
        self._zeroconf: Any = None

    @property
    def port(self) -> int | None:
        """The bound TCP port (useful with port 0), None for a Unix socket or before start."""
        if self._server is None:
            return None
        for sock in self._server.sockets:
            name = sock.getsockname()
            if isinstance(name, tuple):
                return int(name[1])
        return None

    async def start(self) -> None:
        parsed = urlparse(self.uri)
        if parsed.scheme == "tcp":
            if parsed.hostname is None or parsed.port is None:
                raise ConfigError(f"TALKIES_WYOMING_URI={self.uri!r}: a tcp:// URI needs host and port")
            self._server = await asyncio.start_server(
                self._accept, host=parsed.hostname, port=parsed.port, limit=MAX_HEADER_BYTES
            )
        elif parsed.scheme == "unix":
            if not parsed.path:
                raise ConfigError(f"TALKIES_WYOMING_URI={self.uri!r}: a unix:// URI needs a path")
            self._server = await asyncio.start_unix_server(
                self._accept, path=parsed.path, limit=MAX_HEADER_BYTES
            )
        else:
            raise ConfigError(
                f"TALKIES_WYOMING_URI={self.uri!r}: expected tcp://HOST:PORT or unix:///path/to/socket"
            )
        log.info(
            "wyoming: listening on %s", self.uri if self.port is None else f"{self.uri} (port {self.port})"
        )
        if self.settings.wyoming_zeroconf and parsed.scheme == "tcp":
            await self._announce(parsed.hostname or "", self.port or 0)

    async def stop(self) -> None:
        if self._zeroconf is not None:
            with contextlib.suppress(Exception):
                await self._zeroconf.unregister_server()
            self._zeroconf = None
        if self._server is not None:
            self._server.close()
            for task in list(self._connections):
                task.cancel()
            if self._connections:
                await asyncio.gather(*self._connections, return_exceptions=True)
            with contextlib.suppress(Exception):
                await self._server.wait_closed()
            self._server = None
            log.info("wyoming: stopped")

    async def _announce(self, host: str, port: int) -> None:
        try:
            from wyoming.zeroconf import HomeAssistantZeroconf
        except ImportError as exc:
            raise ConfigError(
                "TALKIES_WYOMING_ZEROCONF needs the zeroconf package (pip install 'talkies[wyoming]')"
            ) from exc
        self._zeroconf = HomeAssistantZeroconf(
            name=self.settings.wyoming_zeroconf,
            port=port,
            host=host if host not in ("0.0.0.0", "::") else None,
        )
        await self._zeroconf.register_server()
        log.info("wyoming: announced as %r over zeroconf", self.settings.wyoming_zeroconf)

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        peer = writer.get_extra_info("peername")
        if len(self._connections) >= self.settings.wyoming_max_connections:
            await self._refuse(writer, peer)
            return
        self._connections.add(task)
        try:
            await Connection(self, reader, writer).run()
        except (ConnectionError, asyncio.IncompleteReadError):
            log.info("wyoming: client %s went away", peer)
        except asyncio.CancelledError:
            pass
        finally:
            self._connections.discard(task)
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()

    async def _refuse(self, writer: asyncio.StreamWriter, peer: Any) -> None:
        from wyoming.event import Event, async_write_event

        limit = self.settings.wyoming_max_connections
        log.warning("wyoming: refused %s: %d connections open (TALKIES_WYOMING_MAX_CONNECTIONS)", peer, limit)
        text = (
            f"too many Wyoming connections: {limit} are open (TALKIES_WYOMING_MAX_CONNECTIONS); retry later"
        )
        try:
            async with asyncio.timeout(5):  # a client that reads nothing does not hold this task
                await async_write_event(
                    Event("error", {"text": text, "code": "too_many_connections"}), writer
                )
        except (ConnectionError, TimeoutError):
            pass
        finally:
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()
