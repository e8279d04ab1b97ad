"""The Wyoming protocol server (Home Assistant's voice pipeline): `server` runs it over the same services
and pool as HTTP; `frames` reads and checks its events and converts its audio."""

from talkies.api.wyoming.server import WyomingServer

__all__ = ["WyomingServer"]
