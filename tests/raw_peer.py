"""A peer written by hand for tests: a framing state machine over a stream, nothing more.

It follows no exchange rules of its own (no resends, no automatic commit
acknowledgements), so tests can make it misbehave on purpose.
"""

from __future__ import annotations

import trio

from mllp_trio.proto import NEED_DATA, HLLPConnection, MLLPConnection
from mllp_trio.proto._events import Event


class RawPeer:
    """Send and receive framing events over ``transport``, one at a time."""

    def __init__(
        self, transport: trio.abc.Stream, connection: MLLPConnection | HLLPConnection
    ) -> None:
        self.transport = transport
        self.connection = connection

    async def receive_event(self) -> Event:
        while True:
            event = self.connection.next_event()
            if event is not NEED_DATA:
                return event
            self.connection.receive_data(await self.transport.receive_some(65536))

    async def send_event(self, event: object) -> bytes:
        data = self.connection.send(event)  # type: ignore[arg-type]
        await self.transport.send_all(data)
        return data

    async def send_bytes(self, data: bytes) -> None:
        await self.transport.send_all(data)

    async def aclose(self) -> None:
        await self.transport.aclose()
