"""talkies on Ray Serve (the `talkies[ray]` extra): see docs/scale-out.md.

`serve run talkies.ray:app` deploys the application built from the TALKIES_* environment; `app` is built
when it is first read, so importing this package builds nothing. The single-process server never imports
this package.
"""

from __future__ import annotations

from typing import Any


def __getattr__(name: str) -> Any:
    if name == "app":
        from talkies.ray.app import build_app
        from talkies.settings import load_settings

        return build_app(load_settings())
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
