"""Sample HL7 messages shared by the tests."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, timedelta, timezone

#: A fixed clock for golden ACKs, and its HL7 TS form.
NOW = datetime(2024, 1, 31, 23, 59, 59, tzinfo=timezone(timedelta(hours=1)))
NOW_TS = "20240131235959+0100"


def make_message(
    *,
    version: str = "2.5",
    message_type: str = "ADT^A01^ADT_A01",
    control_id: str = "MSG00001",
    processing_id: str = "P",
    accept_ack: str = "",
    application_ack: str = "",
    charset: str = "",
    patient_name: str = "DOE^JOHN",
    terminator: str = "\r",
    codec: str = "ascii",
) -> bytes:
    """An ADT message with MSH-3..6 carrying components, in the given codec."""
    msh = [
        "MSH",
        "^~\\&",
        "LAB^1.2.3^ISO",
        "HOSP",
        "EHR",
        "CLINIC^WARD",
        "20240131120000",
        "",
        message_type,
        control_id,
        processing_id,
        version,
        "",
        "",
        accept_ack,
        application_ack,
        "",
        charset,
    ]
    while msh[-1] == "" and len(msh) > 12:
        msh.pop()
    segments = [
        "|".join(msh),
        "EVN|A01|20240131120000",
        f"PID|1||12345^^^HOSP^MR||{patient_name}||19700101|M",
        "PV1|1|I|WARD^101^A",
    ]
    return (terminator.join(segments) + terminator).encode(codec)


#: The v2.3 sample ADT^A01 in ASCII.
ADT_A01_V23 = make_message(version="2.3", message_type="ADT^A01")
#: The v2.5 sample.
ADT_A01_V25 = make_message(version="2.5")
#: The v2.5.1 sample.
ADT_A01_V251 = make_message(version="2.5.1")


def ack_msh(version: str, control_id: str, *, trigger: str = "A01", charset: str = "") -> str:
    """The MSH segment our ACK of :func:`make_message` output must have."""
    modern = tuple(int(p) for p in version.split(".")) >= (2, 5)
    msh9 = f"ACK^{trigger}^ACK" if modern else f"ACK^{trigger}"
    msh = f"MSH|^~\\&|EHR|CLINIC^WARD|LAB^1.2.3^ISO|HOSP|{NOW_TS}||{msh9}|{control_id}|P|{version}"
    if charset:
        msh += f"||||||{charset}"
    return msh


def ids(*values: str) -> Callable[[], str]:
    """A deterministic ``new_id`` source yielding the given control ids."""
    return iter(values).__next__
