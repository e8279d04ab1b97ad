"""The application factory. No import-time singletons: everything hangs off `app.state`."""

from __future__ import annotations

import contextlib
import functools
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import anyio.to_thread
from fastapi import FastAPI
from fastapi.middleware.cors import CORSMiddleware

from talkies import __version__
from talkies.api import audio, files, system
from talkies.api.errors import install_error_handlers
from talkies.api.mcp import install_mcp
from talkies.api.middleware import BearerAuthMiddleware, RequestContextMiddleware
from talkies.device import resolve_device
from talkies.engines import make_engine_factory
from talkies.errors import ConfigError
from talkies.pool import Clock, EngineFactory, ModelPool
from talkies.registry import Registry, default_models_file, load_registry
from talkies.services.downloads import Downloader, resolve_file_path
from talkies.services.files import FileStore
from talkies.services.speech import SpeechService
from talkies.services.transcription import TranscriptionService
from talkies.settings import Settings

log = logging.getLogger(__name__)


def build_registry(settings: Settings, device: str) -> Registry:
    registry = load_registry(settings.models_file or default_models_file(device), settings.enabled_models)
    unknown = [slug for slug in settings.preload if slug not in registry.models]
    if unknown:
        raise ConfigError(
            f"TALKIES_PRELOAD names models that are not enabled: {', '.join(unknown)}; "
            f"enabled: {', '.join(registry.models)}"
        )
    return registry


def create_app(
    settings: Settings,
    *,
    engine_factory: EngineFactory | None = None,
    clock: Clock | None = None,
) -> FastAPI:
    """Build the app. Raises ConfigError for a bad registry, before anything is served."""
    device = resolve_device(settings.device)
    registry = build_registry(settings, device)
    pool_kwargs = {"clock": clock} if clock else {}
    factory = engine_factory or make_engine_factory(settings)  # worker processes per TALKIES_ENGINE_ISOLATION
    pool = ModelPool(registry, settings, device=device, engine_factory=factory, **pool_kwargs)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        settings.data_dir.mkdir(parents=True, exist_ok=True)
        app.state.files = FileStore(settings.files_dir, settings.max_upload_bytes)
        await anyio.to_thread.run_sync(app.state.files.remove_partials)
        app.state.downloads = Downloader(
            app.state.files,
            max_bytes=settings.max_download_bytes,
            cache_bytes=settings.download_cache_bytes,
            block_private=settings.block_private_downloads,
        )
        app.state.resolve_file_path = functools.partial(
            resolve_file_path, files=app.state.files, downloads=app.state.downloads
        )
        log.info(
            "talkies %s: %d models from %s on %s, data in %s",
            __version__,
            len(registry.models),
            registry.path,
            device,
            settings.data_dir,
        )
        if settings.preload:
            log.info("preloading %s", ", ".join(settings.preload))
            await pool.preload(settings.preload)
        pool.start_sweeper()
        try:
            async with mcp_endpoint.running() if mcp_endpoint else contextlib.nullcontext():
                yield
        finally:
            await pool.close()

    app = FastAPI(title="talkies", version=__version__, lifespan=lifespan)
    app.state.settings = settings
    app.state.registry = registry
    app.state.pool = pool
    app.state.device = device
    app.state.transcription = TranscriptionService(pool, registry, settings)
    app.state.speech = SpeechService(pool, registry, settings)
    install_error_handlers(app)
    app.include_router(system.router)
    app.include_router(audio.router)
    app.include_router(files.router)
    mcp_endpoint = install_mcp(app)

    # Last added runs first: CORS, then request context (so a 401 is logged too), then auth.
    app.add_middleware(BearerAuthMiddleware, tokens=settings.auth_tokens)
    app.add_middleware(RequestContextMiddleware)
    if settings.cors_origins:
        app.add_middleware(
            CORSMiddleware,
            allow_origins=list(settings.cors_origins),
            allow_methods=["*"],
            allow_headers=["*"],
            expose_headers=["X-Request-ID", "Retry-After"],
        )
    return app
