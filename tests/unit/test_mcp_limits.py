"""The MCP body limit's arithmetic and the JSON-RPC skeleton reader (`talkies.api.mcp_limits`)."""

from __future__ import annotations

import base64
import json

from talkies.api.mcp_limits import RpcSkeleton, body_limit

CAP = 10 * 1024 * 1024


def test_the_limit_covers_base64_of_the_cap() -> None:
    for cap in (1, 1000, CAP):
        encoded = base64.encodebytes(b"x" * cap)  # MIME line breaks: the biggest common form
        body = json.dumps({"params": {"arguments": {"content_base64": encoded.decode()}}})
        assert len(body) < body_limit(cap)


def test_skeleton_finds_id_method_and_tool_in_any_order_and_chunking() -> None:
    body = {
        "params": {
            "arguments": {"content_base64": "QUJD" * 5000 + "\n", "x": [1, {"id": 9}]},
            "name": "put_file",
        },
        "id": "req-7",
        "method": "tools/call",
        "jsonrpc": "2.0",
    }
    raw = json.dumps(body).encode()
    for size in (1, 13, 4096, len(raw)):
        skeleton = RpcSkeleton()
        for at in range(0, len(raw), size):
            skeleton.feed(raw[at : at + size])
        assert skeleton.found == {"id": "req-7", "method": "tools/call", "tool": "put_file"}
