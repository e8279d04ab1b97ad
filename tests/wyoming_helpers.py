"""What the Wyoming tests share, on the single-process server and on Ray Serve: a client connected on
127.0.0.1, and reads bounded in time (a server that stops answering fails the test, never hangs it)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from wyoming.client import AsyncTcpClient
from wyoming.event import Event

READ_TIMEOUT = 300.0


@asynccontextmanager
async def wyoming_client(port: int) -> AsyncIterator[AsyncTcpClient]:
    client = AsyncTcpClient("127.0.0.1", port)
    await client.connect()
    try:
        yield client
    finally:
        await client.disconnect()


async def read_event(client: AsyncTcpClient) -> Event:
    event = await asyncio.wait_for(client.read_event(), READ_TIMEOUT)
    assert event is not None, "the Wyoming server closed the connection"
    return event


async def read_until(client: AsyncTcpClient, last: str) -> list[Event]:
    """Events up to and with the first of type `last` (or an `error`)."""
    events = []
    while True:
        event = await read_event(client)
        events.append(event)
        if event.type in (last, "error"):
            return events
