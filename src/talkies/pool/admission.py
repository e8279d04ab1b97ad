"""Admission that reserves: a place in a model's queue taken when a request is admitted, and a bound on
concurrent audio decodes (TALKIES_MAX_DECODES).

A model has `max_concurrency + max_queue` places. `check` (the pool's `check_queue`, which services call
as soon as the model is known) takes one for the current request, or answers 429 when none is left: a
request refused here is never decoded or stored, and one admitted here keeps its place until it ends,
so `max_queue` bounds the decoded audio waiting for a model as well as the requests. The place is a
ticket in the request's book (`scope`, opened once per HTTP request by the app, and by the Wyoming
handler); every `acquire` of that request for that model uses it, and it is returned when the request
ends however it ends. An `acquire` outside any book (a preload, a test) takes a place for its own span.

Places are counted synchronously (no await between the check and the count), by this object alone.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field

from talkies.errors import QueueFullError
from talkies.pool.slot import Slot
from talkies.settings import Settings


@dataclass(eq=False)
class Ticket:
    slot: Slot
    in_use: bool = False  # an acquire of its request holds it now


@dataclass(eq=False)
class TicketBook:
    """The places one request holds, by model."""

    tickets: dict[str, Ticket] = field(default_factory=dict)


_BOOK: contextvars.ContextVar[TicketBook | None] = contextvars.ContextVar("talkies_tickets", default=None)


class Admission:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.decodes_limit = settings.max_decodes
        self._decodes: asyncio.Semaphore | None = None
        self.decoding = 0  # decodes running now
        self.decode_waiting = 0  # admitted requests waiting for a decode slot

    def places(self, slot: Slot) -> int:
        spec = slot.spec
        queue = spec.max_queue if spec.max_queue is not None else self.settings.max_queue
        return spec.max_concurrency + queue

    def _refuse_if_full(self, slot: Slot) -> None:
        if slot.places >= self.places(slot):
            limit = self.places(slot) - slot.spec.max_concurrency
            raise QueueFullError(
                f"model {slot.spec.slug!r} is busy: {slot.places} requests already admitted for "
                f"{slot.spec.max_concurrency} running and {limit} waiting (TALKIES_MAX_QUEUE); retry later",
                retry_after=slot.retry_after(),
            )

    def check(self, slot: Slot) -> None:
        """Admit the current request for `slot` (a ticket in its book) or raise QueueFullError."""
        book = _BOOK.get()
        if book is not None and slot.spec.slug in book.tickets:
            return  # admitted already (the multipart reader, then validate)
        self._refuse_if_full(slot)
        if book is not None:
            slot.places += 1
            book.tickets[slot.spec.slug] = Ticket(slot)

    @contextlib.contextmanager
    def place(self, slot: Slot) -> Iterator[None]:
        """An acquire's place: its request's ticket, else one of its own (QueueFullError when full)."""
        book = _BOOK.get()
        ticket = book.tickets.get(slot.spec.slug) if book is not None else None
        if ticket is not None and not ticket.in_use:
            ticket.in_use = True
            try:
                yield
            finally:
                ticket.in_use = False
            return
        self._refuse_if_full(slot)
        slot.places += 1
        try:
            yield
        finally:
            slot.places -= 1

    @staticmethod
    @contextlib.contextmanager
    def scope() -> Iterator[None]:
        """One request's life: the tickets it takes are returned when it ends (nested scopes share it)."""
        if _BOOK.get() is not None:
            yield
            return
        book = TicketBook()
        token = _BOOK.set(book)
        try:
            yield
        finally:
            _BOOK.reset(token)
            for ticket in book.tickets.values():
                ticket.slot.places -= 1
            book.tickets.clear()

    @contextlib.asynccontextmanager
    async def decode_slot(self) -> AsyncIterator[None]:
        """Hold one of TALKIES_MAX_DECODES decode slots while audio is decoded."""
        if self._decodes is None:
            self._decodes = asyncio.Semaphore(self.decodes_limit)
        self.decode_waiting += 1
        try:
            await self._decodes.acquire()
        finally:
            self.decode_waiting -= 1
        try:
            self.decoding += 1
            yield
        finally:
            self.decoding -= 1
            self._decodes.release()
