"""The web playground: a static page served from package data (`talkies/ui/`), no build step, no CDN.

`/` and `/ui/` serve the same page; its script and styles are referenced relative to the page, and the
script finds the API relative to its own URL, so it works under any path prefix a reverse proxy adds.
The page and its files are public (they hold no data); every API call it makes carries the bearer token
the user typed, kept in the tab's session storage. `TALKIES_UI=false` leaves these routes out.
"""

from __future__ import annotations

from functools import cache
from importlib import resources

from fastapi import APIRouter, HTTPException
from fastapi.responses import HTMLResponse, RedirectResponse, Response

router = APIRouter(include_in_schema=False)

PUBLIC_PREFIX = "/ui/"
_STATIC = {
    "app.js": "text/javascript",
    "catalog.js": "text/javascript",
    "waveform.js": "text/javascript",
    "live.js": "text/javascript",  # live microphone mode over the realtime WebSocket
    "mic-worklet.js": "text/javascript",
    "style.css": "text/css",
}
# The page loads nothing from elsewhere: a Content-Security-Policy keeps it that way.
_HEADERS = {
    "Content-Security-Policy": "default-src 'self'; media-src 'self' blob:; img-src 'self' data:; "
    "connect-src 'self'; object-src 'none'; base-uri 'none'; frame-ancestors 'none'",
    "X-Content-Type-Options": "nosniff",
    "Cache-Control": "no-cache",
}


@cache
def _read(name: str) -> str:
    return (resources.files("talkies") / "ui" / name).read_text(encoding="utf-8")


def _page(static: str) -> HTMLResponse:
    return HTMLResponse(_read("index.html").replace("{{static}}", static), headers=_HEADERS)


@router.get("/")
async def root_page() -> HTMLResponse:
    return _page("ui/static/")


@router.get("/ui")
async def ui_redirect() -> RedirectResponse:
    return RedirectResponse("ui/", status_code=308)  # relative: keeps a proxy's path prefix


@router.get("/ui/")
async def ui_page() -> HTMLResponse:
    return _page("static/")


@router.get("/ui/static/{name}")
async def static_file(name: str) -> Response:
    media_type = _STATIC.get(name)
    if media_type is None:
        raise HTTPException(404, f"no such file: {name}")
    return Response(_read(name), media_type=media_type, headers=_HEADERS)
