"""Service logs: JSON lines with stable fields, one INFO line per message, no content ever."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import trio

from mllp_trio._client import open_mllp_client
from mllp_trio._config import ServerConfig
from mllp_trio._service import ServiceConfig, configure_logging
from mllp_trio.proto import MLLPConnection
from mllp_trio.proto._events import Message

from .hl7_samples import make_message
from .raw_peer import RawPeer
from .service_helpers import running_service, send_one

MARKER = "PLANTEDMARKERXYZ"


@pytest.fixture
def json_log() -> Iterator[io.StringIO]:
    """Root logging to a buffer as JSON at DEBUG; the previous setup restored after."""
    root, ours = logging.getLogger(), logging.getLogger("mllp_trio")
    saved = (root.handlers[:], root.level, ours.level)
    buffer = io.StringIO()
    configure_logging("DEBUG", "json", stream=buffer)
    try:
        yield buffer
    finally:
        root.handlers[:] = saved[0]
        root.setLevel(saved[1])
        ours.setLevel(saved[2])


def lines(buffer: io.StringIO) -> list[dict[str, Any]]:
    return [json.loads(line) for line in buffer.getvalue().splitlines()]


async def exchange(port: int) -> None:
    """Messages with the marker in a patient name, a duplicate, junk and an empty frame."""
    async with open_mllp_client("127.0.0.1", port) as client:
        for cid in ("LOG1", "LOG2", "LOG1"):
            await client.send_raw(make_message(control_id=cid, patient_name=f"{MARKER}^JO"))
    stream = await trio.open_tcp_stream("127.0.0.1", port)
    peer = RawPeer(stream, MLLPConnection())
    await peer.send_bytes(b"\x0b\x1c\x0d")
    await peer.send_event(Message(f"{MARKER} is not HL7\r".encode()))
    bad = make_message(control_id="LOG3", version="9.9", patient_name=MARKER)
    await peer.send_event(Message(bad))
    assert isinstance(await peer.receive_event(), Message)
    await peer.aclose()


async def test_json_lines_carry_each_message_and_never_its_content(
    tmp_path: Path, json_log: io.StringIO
) -> None:
    async with running_service(tmp_path / "j") as svc:
        await exchange(svc.port)
        while svc.server.stats.active:
            await trio.sleep(0.001)

    text = json_log.getvalue()
    assert MARKER not in text, "message content leaked into the logs"
    records = lines(json_log)  # every line is one JSON object
    for record in records:
        assert {"time", "level", "logger", "message"} <= record.keys()
        assert record["time"].endswith("Z")

    answered = [r for r in records if r.get("event") == "message"]
    assert [(r["control_id"], r["ack"], r["level"]) for r in answered] == [
        ("LOG1", "AA", "INFO"),
        ("LOG2", "AA", "INFO"),
        ("LOG1", "AA", "INFO"),
        (None, None, "INFO"),  # the frame without MSH: nothing to answer
        ("LOG3", "AR", "INFO"),
    ]
    first = answered[0]
    assert first["logger"] == "mllp_trio.messages"
    assert first["message_type"] == "ADT^A01"
    assert first["listener"] == "test" and first["identity"] is None
    assert first["peer"].startswith("127.0.0.1:")
    assert isinstance(first["latency_ms"], float) and first["latency_ms"] >= 0

    # Duplicates and the connection life cycle are DEBUG.
    duplicates = [r for r in records if "duplicate of control id" in r["message"]]
    assert [r["level"] for r in duplicates] == ["DEBUG"]
    life = [r["message"] for r in records if r["logger"] == "mllp_trio.server"]
    assert sum("accepted" in m for m in life) == sum(" closed" in m for m in life) == 2


async def test_control_ids_can_be_left_out_of_every_line(
    tmp_path: Path, json_log: io.StringIO
) -> None:
    # As --log-no-control-ids sets it up: the message line and every other
    # line that names a control id (duplicates, refusals) leave it out.
    configure_logging("DEBUG", "json", stream=json_log, control_ids=False)
    service = ServiceConfig(metrics_port=0, min_free_bytes=0, log_control_ids=False)
    async with running_service(tmp_path / "j", service=service) as svc:
        for _ in range(2):  # the second is a duplicate
            await send_one(svc.port, make_message(control_id="HIDDENCID42"))
        await send_one(svc.port, make_message(control_id="HIDDENCID43", version="9.9"))
    text = json_log.getvalue()
    assert "HIDDENCID4" not in text
    answered = [r for r in lines(json_log) if r.get("event") == "message"]
    assert [r["ack"] for r in answered] == ["AA", "AA", "AR"]
    assert not [r for r in answered if "control_id" in r]
    assert "duplicate of control id '<hidden>'" in text  # the line is still there


async def test_text_line_at_info_is_one_line_without_content(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="mllp_trio")
    async with running_service(tmp_path / "j", config=ServerConfig()) as svc:
        await send_one(svc.port, make_message(control_id="A\tB", patient_name=MARKER))
    (record,) = [r for r in caplog.records if r.name == "mllp_trio.messages"]
    text = record.getMessage()
    assert "\n" not in text and MARKER not in text
    # A control character a sender put in MSH-10 cannot break the line.
    assert "control_id=A?B" in text and "ack=AA" in text
    assert "message_type=ADT^A01 " in text


def test_configure_logging_refuses_unknown_values() -> None:
    with pytest.raises(ValueError, match="log level"):
        configure_logging("LOUD")
    with pytest.raises(ValueError, match="log format"):
        configure_logging("INFO", "xml")
