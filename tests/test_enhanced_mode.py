"""Enhanced acknowledgement mode on the wire: accept ACK now, application ACK handed over."""

from __future__ import annotations

import mllp_trio
from mllp_trio import MLLPServer, Outcome

from .conftest import StartServer

ENHANCED = (
    b"MSH|^~\\&|SENDAPP|SENDFAC|RECVAPP|RECVFAC|20240101120000||ADT^A01|ENH001|P|2.5|||AL|AL\r"
    b"PID|1||12345^^^HOSP^MR||DOE^JOHN\r"
)


async def test_accept_ack_on_the_connection_application_ack_to_the_callback(
    start_server: StartServer,
) -> None:
    handed: list[Outcome] = []

    async def take(outcome: Outcome) -> None:
        handed.append(outcome)

    port = await start_server(MLLPServer(on_application_ack=take))
    async with mllp_trio.open_mllp_client("127.0.0.1", port) as conn:
        reply = await conn.send(ENHANCED)
    assert reply.code == "CA"
    assert reply.control_id == "ENH001"
    assert len(handed) == 1
    assert handed[0].application_code == "AA"
    application_ack = handed[0].application_ack
    assert application_ack is not None
    parsed = mllp_trio.parse_reply(application_ack, "ENH001")
    assert parsed.code == "AA"


async def test_no_callback_means_no_application_ack_sent(start_server: StartServer) -> None:
    port = await start_server(MLLPServer())
    async with mllp_trio.open_mllp_client("127.0.0.1", port) as conn:
        reply = await conn.send(ENHANCED)
        # The next exchange still works: nothing else was written on the connection.
        second = await conn.send(ENHANCED.replace(b"ENH001", b"ENH002"))
    assert (reply.code, second.code) == ("CA", "CA")
