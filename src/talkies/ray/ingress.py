"""The ingress deployment: the single-process server's FastAPI app (every route, auth, limits, errors,
streaming, MCP), built in the replica by `create_app` with `RayModels` as its engines."""

from __future__ import annotations

from typing import Any

from ray.serve.handle import DeploymentHandle

from ray import serve
from talkies.api.app import create_app
from talkies.logs import configure_logging
from talkies.ray.remote import RayModels
from talkies.settings import Settings


@serve.ingress()
class Ingress:
    def __init__(self, settings: Settings, device: str, servers: dict[str, DeploymentHandle[Any]]) -> None:
        configure_logging(settings.log_level)  # before the app is built (see talkies.logs)
        self.settings = settings
        context = serve.get_replica_context()
        labels = {"deployment": context.deployment, "replica": context.replica_id.unique_id}
        self.models = RayModels(settings, device, servers, labels)

    def __serve_build_asgi_app__(self) -> Any:
        return create_app(self.settings, remote=self.models)
