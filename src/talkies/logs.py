"""The server's log set-up, shared by `talkies serve` and the Ray Serve replicas.

Plain lines on stderr at TALKIES_LOG_LEVEL. On Ray, a replica's process starts with no root handler, and
the first library to call `logging.basicConfig` would otherwise choose (the MCP SDK installs rich's
console handler at INFO when its server is built): the replicas call `configure_logging` before they build
anything, so TALKIES_LOG_LEVEL holds there too and a request's access line stays a plain write.
"""

from __future__ import annotations

import logging
import sys

FORMAT = "%(asctime)s %(levelname)-7s %(name)s: %(message)s"


def configure_logging(level: str) -> None:
    """Root handler (unless one is there already) and the `talkies` loggers at `level`."""
    logging.basicConfig(level=level.upper(), format=FORMAT, stream=sys.stderr)
    logging.getLogger("talkies").setLevel(level.upper())
