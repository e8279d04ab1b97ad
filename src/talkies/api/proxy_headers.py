"""Which headers the proxy to `process` models passes on, each way (pure helpers).

Hop-by-hop headers concern one connection only (RFC 9110 7.6.1): the fixed list, plus whatever the
sender's own `Connection` header names, are dropped both ways. The request id is ours: the server
behind gets exactly one `x-request-id` (the one in our log and in our answer), and its own
`x-request-id` never reaches the client beside ours.
"""

from __future__ import annotations

from collections.abc import Sequence

HOP_BY_HOP = frozenset(
    {
        b"connection",
        b"keep-alive",
        b"proxy-authenticate",
        b"proxy-authorization",
        b"te",
        b"trailer",
        b"transfer-encoding",
        b"upgrade",
        b"host",
        b"content-length",
        b"expect",
    }
)
REQUEST_ID = b"x-request-id"
_RESPONSE_DROP = (HOP_BY_HOP - {b"content-length"}) | {REQUEST_ID}
"""The answer keeps the server's content-length; our RequestContextMiddleware adds our request id."""

Headers = Sequence[tuple[bytes, bytes]]


def end_to_end(headers: Headers, drop: frozenset[bytes]) -> list[tuple[bytes, bytes]]:
    """`headers` without the names in `drop` and those their own `Connection` header lists."""
    listed = {
        token.strip().lower()
        for name, value in headers
        if name.lower() == b"connection"
        for token in value.split(b",")
    }
    return [(k, v) for k, v in headers if k.lower() not in drop and k.lower() not in listed]


def request_headers(
    headers: Headers, *, strip_auth: bool, length: int | None, request_id: str | None
) -> list[tuple[bytes, bytes]]:
    """What the server behind receives: the client's end-to-end headers (its bearer token only when the
    token is not ours, i.e. talkies itself has none), the body's length when known, and our request id."""
    drop = HOP_BY_HOP | {REQUEST_ID} | ({b"authorization"} if strip_auth else frozenset())
    forwarded = end_to_end(headers, drop)
    if length is not None:
        forwarded.append((b"content-length", str(length).encode()))
    if request_id:
        forwarded.append((REQUEST_ID, request_id.encode()))
    return forwarded


def response_headers(headers: Headers) -> list[tuple[bytes, bytes]]:
    """What the client receives of the server's answer head."""
    return end_to_end(headers, _RESPONSE_DROP)
