"""`talkies.api.proxy_headers`: hop-by-hop headers (Connection-listed ones included) and the request id."""

from __future__ import annotations

from talkies.api.proxy_headers import end_to_end, request_headers, response_headers


def test_header_helpers() -> None:
    sent = [
        (b"Connection", b"close, X-A"),
        (b"connection", b"x-b"),
        (b"X-A", b"1"),
        (b"x-b", b"2"),
        (b"x-c", b"3"),
        (b"X-Request-ID", b"theirs"),
        (b"Authorization", b"Bearer ours"),
    ]
    assert end_to_end(sent, frozenset({b"connection"})) == [
        (b"x-c", b"3"),
        (b"X-Request-ID", b"theirs"),
        sent[-1],
    ]
    forwarded = request_headers(sent, strip_auth=True, length=5, request_id="rid")
    assert forwarded == [(b"x-c", b"3"), (b"content-length", b"5"), (b"x-request-id", b"rid")]
    kept_auth = request_headers(sent, strip_auth=False, length=None, request_id=None)
    assert kept_auth == [(b"x-c", b"3"), (b"Authorization", b"Bearer ours")]
    answered = [(b"content-length", b"9"), (b"transfer-encoding", b"chunked"), *sent]
    assert response_headers(answered) == [(b"content-length", b"9"), (b"x-c", b"3"), sent[-1]]
