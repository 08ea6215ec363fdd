"""Deterministic, realistic HL7 v2 test messages and the cheap ACK every peer server builds."""

from __future__ import annotations

import itertools
import random
import time
from typing import Final

__all__ = [
    "SIZES",
    "build_ack",
    "frame_mllp",
    "message_pool",
    "split_chunks",
    "stream_of",
]

#: Size labels and the approximate message size in bytes each one aims at.
SIZES: Final[dict[str, int]] = {"200B": 200, "1KB": 1024, "64KB": 64 * 1024}

_FAMILY = ("SMITH", "JONES", "GARCIA", "MULLER", "ROSSI", "DUBOIS", "NOVAK", "SATO", "KIM")
_GIVEN = ("ANNA", "JOHN", "MARIA", "PETER", "LUCIA", "OMAR", "YUKI", "ELENA", "NOAH")
_STREETS = ("MAIN ST", "OAK AVE", "PARK RD", "HIGH ST", "ELM ST", "RIVER LN")
_CITIES = ("SPRINGFIELD", "RIVERTON", "LAKEVIEW", "FAIRVIEW", "MILTON")
_TESTS = (
    ("2345-7", "GLUCOSE", "mg/dL", "70-99"),
    ("2160-0", "CREATININE", "mg/dL", "0.6-1.3"),
    ("718-7", "HEMOGLOBIN", "g/dL", "12.0-17.5"),
    ("6690-2", "WBC", "10*3/uL", "4.5-11.0"),
    ("2951-2", "SODIUM", "mmol/L", "135-145"),
    ("2823-3", "POTASSIUM", "mmol/L", "3.5-5.1"),
)


_COMPLAINTS = ("CHEST PAIN", "FEVER", "FRACTURE", "DYSPNEA", "HEADACHE", "SYNCOPE")


def _ts(rng: random.Random) -> str:
    return (
        f"2024{rng.randint(1, 12):02d}{rng.randint(1, 28):02d}"
        f"{rng.randint(0, 23):02d}{rng.randint(0, 59):02d}{rng.randint(0, 59):02d}"
    )


def _msh(rng: random.Random, msg_type: str, control_id: str) -> str:
    return (
        f"MSH|^~\\&|ADT_APP|GENERAL_HOSP|LAB_APP|LAB_FAC|{_ts(rng)}||{msg_type}|{control_id}|P|2.5"
    )


def _pid(rng: random.Random, index: int, full: bool) -> str:
    name = f"{rng.choice(_FAMILY)}^{rng.choice(_GIVEN)}"
    birth = f"19{rng.randint(30, 99)}{rng.randint(1, 12):02d}{rng.randint(1, 28):02d}"
    sex = rng.choice("MF")
    if not full:
        return f"PID|1||{100000 + index}^^^GH^MR||{name}||{birth}|{sex}"
    address = (
        f"{rng.randint(1, 999)} {rng.choice(_STREETS)}^^{rng.choice(_CITIES)}^ST^"
        f"{rng.randint(10000, 99999)}^USA"
    )
    phone = f"(555){rng.randint(100, 999)}-{rng.randint(1000, 9999)}"
    return (
        f"PID|1||{100000 + index}^^^GH^MR~{rng.randint(100000000, 999999999)}^^^SSA^SS||"
        f"{name}^Q^^^L||{birth}|{sex}||2106-3^White^HL70005|{address}||{phone}|||M||"
        f"ACC{index:08d}|{rng.randint(100000000, 999999999)}"
    )


def _adt_a01(rng: random.Random, index: int, target: int) -> str:
    control = f"MSG{index:08d}"
    segments = [
        _msh(rng, "ADT^A01^ADT_A01", control),
        f"EVN|A01|{_ts(rng)}",
        _pid(rng, index, full=target > 300),
    ]
    if target <= 300:
        segments.append(f"PV1|1|I|W{rng.randint(1, 9)}^{rng.randint(100, 499)}^1")
        return "\r".join(segments) + "\r"
    optional = [
        f"PD1|||GENERAL_HOSP^^{rng.randint(1000, 9999)}",
        f"NK1|1|{rng.choice(_FAMILY)}^{rng.choice(_GIVEN)}|SPO^Spouse^HL70063|"
        f"{rng.randint(1, 999)} {rng.choice(_STREETS)}^^{rng.choice(_CITIES)}^ST^"
        f"{rng.randint(10000, 99999)}",
        f"PV1|1|I|W{rng.randint(1, 9)}^{rng.randint(100, 499)}^1^GENERAL_HOSP||||"
        f"{rng.randint(1000, 9999)}^{rng.choice(_FAMILY)}^{rng.choice(_GIVEN)}^^^DR|||MED||||"
        f"ADM|A0||||||||||||||||||||||||||{_ts(rng)}",
        f"PV2|||{rng.choice(('CHEST PAIN', 'FEVER', 'FRACTURE', 'DYSPNEA'))}",
        f"OBX|1|NM|8302-2^BODY HEIGHT^LN||{rng.randint(150, 200)}|cm|||||F",
        f"OBX|2|NM|29463-7^BODY WEIGHT^LN||{rng.randint(45, 120)}|kg|||||F",
        f"AL1|1|DA|{rng.randint(1000, 9999)}^PENICILLIN^RXNORM|MO|RASH",
        f"DG1|1||I{rng.randint(10, 99)}.{rng.randint(0, 9)}^DIAGNOSIS^I10||{_ts(rng)}|A",
        f"GT1|1||{rng.choice(_FAMILY)}^{rng.choice(_GIVEN)}||"
        f"{rng.randint(1, 999)} {rng.choice(_STREETS)}^^{rng.choice(_CITIES)}^ST",
        f"IN1|1|{rng.randint(100, 999)}^PLAN|{rng.randint(1000, 9999)}|ACME INSURANCE|"
        f"PO BOX {rng.randint(100, 9999)}^^{rng.choice(_CITIES)}^ST||||GRP{rng.randint(1, 99)}",
        f"ROL|1|AD|AT|{rng.randint(1000, 9999)}^{rng.choice(_FAMILY)}^{rng.choice(_GIVEN)}",
    ]
    size = sum(len(s) + 1 for s in segments)
    for segment in optional:
        if size + len(segment) + 1 > target:
            break
        segments.append(segment)
        size += len(segment) + 1
    set_id = 3
    while True:
        obx = f"OBX|{set_id}|ST|8661-1^CHIEF COMPLAINT^LN||{rng.choice(_COMPLAINTS)}||||||F"
        if size + len(obx) + 1 > target:
            break
        segments.append(obx)
        size += len(obx) + 1
        set_id += 1
    return "\r".join(segments) + "\r"


def _oru_r01(rng: random.Random, index: int, target: int) -> str:
    control = f"MSG{index:08d}"
    segments = [
        _msh(rng, "ORU^R01^ORU_R01", control),
        _pid(rng, index, full=True),
        f"OBR|1|ORD{index:08d}|FIL{index:08d}|24323-8^METABOLIC PANEL^LN|||{_ts(rng)}",
    ]
    size = sum(len(s) + 1 for s in segments)
    set_id = 1
    while True:
        code, name, unit, ref = rng.choice(_TESTS)
        value = f"{rng.uniform(0.5, 150):.1f}"
        flag = rng.choice(("N", "N", "N", "H", "L"))
        obx = f"OBX|{set_id}|NM|{code}^{name}^LN||{value}|{unit}|{ref}|{flag}|||F|||{_ts(rng)}"
        if size + len(obx) + 1 > target:
            break
        segments.append(obx)
        size += len(obx) + 1
        set_id += 1
        if set_id % 10 == 0:
            note = f"NTE|{set_id // 10}||RESULT VERIFIED BY {rng.choice(_FAMILY)} ON {_ts(rng)}"
            segments.append(note)
            size += len(note) + 1
    return "\r".join(segments) + "\r"


def message_pool(size: str, count: int = 32, seed: int = 2575) -> list[bytes]:
    """Return ``count`` distinct messages of the given size label, always the same ones.

    ``200B`` and ``1KB`` are ADT^A01 admissions, ``64KB`` is an ORU^R01 lab
    result with many OBX segments. Each message has its own MSH-10
    (``MSG00000000``, ...) and its own made-up patient. Segments end with CR.
    """
    target = SIZES[size]
    rng = random.Random(f"{seed}-{size}")
    build = _oru_r01 if target > 4096 else _adt_a01
    return [build(rng, index, target).encode("ascii") for index in range(count)]


def frame_mllp(data: bytes) -> bytes:
    """Wrap one message in an MLLP release 1 frame."""
    return b"\x0b" + data + b"\x1c\r"


def stream_of(pool: list[bytes], count: int) -> bytes:
    """Return ``count`` MLLP frames taken from ``pool`` in turn, back to back."""
    frames = [frame_mllp(m) for m in pool]
    return b"".join(frames[i % len(frames)] for i in range(count))


def split_chunks(stream: bytes, chunk_size: int) -> list[bytes]:
    """Cut ``stream`` into reads of ``chunk_size`` bytes, as a socket would deliver them."""
    return [stream[i : i + chunk_size] for i in range(0, len(stream), chunk_size)]


_ack_ids = itertools.count(1)


def build_ack(message: bytes) -> bytes:
    """Build an HL7 original-mode AA acknowledgement from the MSH of ``message``.

    This is the cheap way a hand-written server acknowledges: split the MSH
    on its field separator, swap sender and receiver, echo MSH-10 in MSA-2.
    It is what the python-hl7 "raw" server and the hl7apy handler do, so that
    every server in the wire benchmark does the same work.
    """
    end = message.find(b"\r")
    msh = message if end < 0 else message[:end]
    sep = msh[3:4] or b"|"
    fields = msh.split(sep)
    fields += [b""] * (12 - len(fields))
    comp = fields[1][:1] or b"^"
    parts = fields[8].split(comp)
    trigger = parts[1] if len(parts) > 1 else b""
    now = time.strftime("%Y%m%d%H%M%S").encode("ascii")
    header = sep.join(
        (
            b"MSH",
            fields[1],
            fields[4],
            fields[5],
            fields[2],
            fields[3],
            now,
            b"",
            b"ACK" + comp + trigger + comp + b"ACK",
            b"ACK%d" % next(_ack_ids),
            fields[10],
            fields[11],
        )
    )
    return header + b"\rMSA" + sep + b"AA" + sep + fields[9] + b"\r"
