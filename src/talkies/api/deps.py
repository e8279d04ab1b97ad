"""`Annotated[..., Depends()]` aliases for what the lifespan keeps on app.state."""

from __future__ import annotations

from typing import Annotated, cast

from fastapi import Depends, Request

from talkies.pool import ModelPool
from talkies.registry import Registry
from talkies.services.downloads import Downloader
from talkies.services.files import FileStore
from talkies.settings import Settings


def get_settings(request: Request) -> Settings:
    return cast(Settings, request.app.state.settings)


def get_pool(request: Request) -> ModelPool:
    return cast(ModelPool, request.app.state.pool)


def get_registry(request: Request) -> Registry:
    return cast(Registry, request.app.state.registry)


def get_files(request: Request) -> FileStore:
    return cast(FileStore, request.app.state.files)


def get_downloads(request: Request) -> Downloader:
    return cast(Downloader, request.app.state.downloads)


def note_model(request: Request, slug: str) -> None:
    """Record the model a request is for, so the access log line names it."""
    request.state.model = slug


SettingsDep = Annotated[Settings, Depends(get_settings)]
PoolDep = Annotated[ModelPool, Depends(get_pool)]
RegistryDep = Annotated[Registry, Depends(get_registry)]
FilesDep = Annotated[FileStore, Depends(get_files)]
DownloadsDep = Annotated[Downloader, Depends(get_downloads)]
