"""MLLP release 1 and 2 framing: SPEC.md sections 1 and 2, row by row."""

from __future__ import annotations

import pytest

import mllp_trio
from mllp_trio.proto import (
    NEED_DATA,
    CommitAck,
    CommitNak,
    LocalProtocolError,
    Message,
    MLLPConnection,
    RemoteProtocolError,
)

from .framing_helpers import ADT, CR, EB, SB, drive, drive_all_ways, frame

MSG_A = ADT
MSG_B = ADT.replace(b"MSG00001", b"MSG00002")
EOS = ("EndOfStream",)


def lenient() -> MLLPConnection:
    return MLLPConnection()


def strict() -> MLLPConnection:
    return MLLPConnection(strict=True)


def test_public_names_are_reexported() -> None:
    for name in [
        "MLLPConnection",
        "HLLPConnection",
        "Message",
        "CommitAck",
        "CommitNak",
        "HLLPNak",
        "NEED_DATA",
        "ProtocolError",
        "LocalProtocolError",
        "RemoteProtocolError",
        "Exchange",
    ]:
        assert hasattr(mllp_trio.proto, name), name
    assert issubclass(mllp_trio.proto.LocalProtocolError, mllp_trio.MLLPError)
    assert issubclass(mllp_trio.proto.RemoteProtocolError, mllp_trio.MLLPError)


@pytest.mark.parametrize("make", [lenient, strict])
def test_frames_back_to_back(make: type[MLLPConnection]) -> None:
    data = frame(MSG_A) + frame(MSG_B)
    assert drive_all_ways(make, data) == [("message", MSG_A), ("message", MSG_B), EOS]


# Row 1: bytes before SB or between frames.
@pytest.mark.parametrize("junk", [b"\r\n", b"log text\n", b"\x00\x00"])
def test_junk_between_frames_lenient_discards_and_counts(junk: bytes) -> None:
    data = junk + frame(MSG_A) + junk + frame(MSG_B) + junk
    assert drive_all_ways(lenient, data) == [("message", MSG_A), ("message", MSG_B), EOS]
    _, conn = drive(lenient, [data])
    assert conn.stats.out_of_frame_bytes == 3 * len(junk)


@pytest.mark.parametrize("junk", [b"\r\n", b"log text\n"])
def test_junk_between_frames_strict_is_protocol_error(junk: bytes) -> None:
    assert drive_all_ways(strict, frame(MSG_A) + junk + frame(MSG_B)) == [
        ("message", MSG_A),
        ("error",),
    ]
    assert drive_all_ways(strict, junk + frame(MSG_A)) == [("error",)]


# Row 2: EB not followed by CR.
@pytest.mark.parametrize("make", [lenient, strict])
@pytest.mark.parametrize("bad_trailer", [b"\n", b"x"])
def test_end_byte_without_cr_rejects_the_frame(
    make: type[MLLPConnection], bad_trailer: bytes
) -> None:
    data = SB + MSG_A + EB + bad_trailer + frame(MSG_B)
    assert drive_all_ways(make, data) == [
        ("invalid", "end-of-block byte not followed by the trailer byte"),
        ("message", MSG_B),
        EOS,
    ]
    _, conn = drive(make, [data])
    assert conn.stats.rejected_frames == 1


def test_end_byte_alone_accepted_by_option() -> None:
    def make() -> MLLPConnection:
        return MLLPConnection(accept_missing_trailer=True)

    data = SB + MSG_A + EB + SB + MSG_B + EB + CR + frame(MSG_A)
    assert drive_all_ways(make, data) == [
        ("message", MSG_A),
        ("message", MSG_B),
        ("message", MSG_A),
        EOS,
    ]


# Row 3: SB inside an open frame.
def test_start_byte_inside_frame_lenient_restarts() -> None:
    data = SB + b"MSH|partial" + frame(MSG_A)
    assert drive_all_ways(lenient, data) == [("message", MSG_A), EOS]
    _, conn = drive(lenient, [data])
    assert conn.stats.dropped_partials == 1


def test_start_byte_inside_frame_strict_is_protocol_error() -> None:
    assert drive_all_ways(strict, SB + b"MSH|partial" + frame(MSG_A)) == [("error",)]


# Row 4: EOF inside a frame.
@pytest.mark.parametrize("make", [lenient, strict])
def test_eof_inside_frame_drops_partial_and_reports(make: type[MLLPConnection]) -> None:
    data = frame(MSG_A) + SB + MSG_B[:20]
    assert drive_all_ways(make, data) == [
        ("message", MSG_A),
        ("invalid", "end of stream inside a frame"),
        EOS,
    ]
    _, conn = drive(make, [data])
    assert conn.stats.dropped_partials == 1


# Row 5: empty frame.
@pytest.mark.parametrize("make", [lenient, strict])
def test_empty_frame_is_rejected(make: type[MLLPConnection]) -> None:
    data = SB + EB + CR + frame(MSG_A)
    assert drive_all_ways(make, data) == [("invalid", "empty frame"), ("message", MSG_A), EOS]


# Row 6: frame over the configured maximum size.
@pytest.mark.parametrize("make_mode", [False, True])
def test_oversize_frame_is_fatal(make_mode: bool) -> None:
    def make() -> MLLPConnection:
        return MLLPConnection(strict=make_mode, max_message_size=len(MSG_A))

    assert drive_all_ways(make, frame(MSG_A) + frame(MSG_A + b"X")) == [
        ("message", MSG_A),
        ("error",),
    ]


def test_oversize_open_frame_is_discarded_and_judged_at_its_end() -> None:
    """An unended oversize frame costs no memory past the limit; its end byte makes it fatal."""
    conn = MLLPConnection(max_message_size=100)
    conn.receive_data(SB)
    for _ in range(1000):
        conn.receive_data(b"x")
        assert conn.next_event() is NEED_DATA
        assert conn.buffered <= 101
    conn.receive_data(EB + CR)
    with pytest.raises(RemoteProtocolError, match="frame of 1000 bytes exceeds the maximum"):
        conn.next_event()
    with pytest.raises(LocalProtocolError, match="unusable"):
        conn.next_event()
    with pytest.raises(LocalProtocolError, match="unusable"):
        conn.receive_data(b"more")


# Row 7: LF / CRLF segment terminators pass through untouched.
@pytest.mark.parametrize("make", [lenient, strict])
@pytest.mark.parametrize("sep", [b"\n", b"\r\n"])
def test_lf_and_crlf_inside_frame_pass_untouched(make: type[MLLPConnection], sep: bytes) -> None:
    body = MSG_A.replace(b"\r", sep)
    assert drive_all_ways(make, frame(body)) == [("message", body), EOS]


def test_custom_framing_bytes() -> None:
    def make() -> MLLPConnection:
        return MLLPConnection(start_byte=0x02, end_byte=0x03, trailer_byte=0x0A)

    data = b"\x02" + MSG_A + b"\x03\x0a"
    assert drive_all_ways(make, data) == [("message", MSG_A), EOS]
    assert make().send(Message(MSG_A)) == data


def test_send_round_trip_and_refusals() -> None:
    conn = MLLPConnection()
    assert conn.send(Message(MSG_A)) == frame(MSG_A)
    with pytest.raises(LocalProtocolError, match="start-of-block or end-of-block"):
        conn.send(Message(b"MSH|\x0b|"))
    with pytest.raises(LocalProtocolError, match="release 2"):
        conn.send(CommitAck())
    with pytest.raises(LocalProtocolError, match="end-of-block sequence"):
        Message(b"MSH|\x1c\r")
    with pytest.raises(LocalProtocolError, match="empty"):
        Message(b"")
    # A refused send does not damage the connection.
    assert conn.send(Message(MSG_B)) == frame(MSG_B)


def test_message_repr_hides_content() -> None:
    assert "DOE" not in repr(Message(ADT))
    assert str(len(ADT)) in repr(Message(ADT))


def test_data_after_eof_is_local_error() -> None:
    conn = MLLPConnection()
    conn.receive_data(b"")
    assert isinstance(conn.next_event(), mllp_trio.proto.EndOfStream)
    assert isinstance(conn.next_event(), mllp_trio.proto.EndOfStream)
    with pytest.raises(LocalProtocolError):
        conn.receive_data(b"x")


def test_frames_before_a_fatal_fault_are_delivered_first() -> None:
    conn = MLLPConnection(strict=True)
    conn.receive_data(frame(MSG_A) + frame(MSG_B) + b"junk")
    assert conn.next_event() == Message(MSG_A)
    assert conn.next_event() == Message(MSG_B)
    with pytest.raises(RemoteProtocolError, match="outside a frame"):
        conn.next_event()


# Release 2.
COMMIT_ACK = SB + b"\x06" + EB + CR
COMMIT_NAK = SB + b"\x15" + EB + CR


def test_release2_commit_blocks_are_exact() -> None:
    sender = MLLPConnection(mllp2=True)
    assert sender.send(Message(MSG_A)) == frame(MSG_A)
    assert sender.awaiting_commit
    # A commit ACK and the next content block in one read both come out.
    sender.receive_data(COMMIT_ACK + frame(MSG_B))
    assert sender.next_event() == CommitAck()
    assert not sender.awaiting_commit
    assert sender.next_event() == Message(MSG_B)
    assert sender.owed_commits == 1
    assert sender.send(CommitAck()) == COMMIT_ACK
    assert sender.owed_commits == 0


def test_release2_commit_nak_and_resend() -> None:
    sender = MLLPConnection(mllp2=True)
    first = sender.send(Message(MSG_A))
    with pytest.raises(LocalProtocolError, match="wait for the commit"):
        sender.send(Message(MSG_B))
    sender.receive_data(COMMIT_NAK)
    assert sender.next_event() == CommitNak()
    assert sender.send(Message(MSG_A)) == first


@pytest.mark.parametrize(
    "block", [SB + b"\x06\x06" + EB + CR, SB + b"\x06\r" + EB + CR, SB + b"ACK" + EB + CR]
)
def test_release2_only_exact_blocks_acknowledge(block: bytes) -> None:
    sender = MLLPConnection(mllp2=True)
    sender.send(Message(MSG_A))
    sender.receive_data(block)
    with pytest.raises(RemoteProtocolError, match="invalid acknowledgement"):
        sender.next_event()


def test_release2_unexpected_commit_ack_is_remote_error() -> None:
    conn = MLLPConnection(mllp2=True)
    conn.receive_data(COMMIT_ACK)
    with pytest.raises(RemoteProtocolError, match="no content block"):
        conn.next_event()


def test_release2_receiver_must_commit_before_sending() -> None:
    receiver = MLLPConnection(mllp2=True)
    receiver.receive_data(frame(MSG_A))
    assert receiver.next_event() == Message(MSG_A)
    with pytest.raises(LocalProtocolError, match="answer the received"):
        receiver.send(Message(MSG_B))
    assert receiver.send(CommitNak()) == COMMIT_NAK
    with pytest.raises(LocalProtocolError, match="no received content"):
        receiver.send(CommitAck())


def test_release2_rejected_frame_is_owed_a_nak() -> None:
    receiver = MLLPConnection(mllp2=True)
    receiver.receive_data(SB + EB + CR)
    assert isinstance(receiver.next_event(), mllp_trio.proto.InvalidFrame)
    assert receiver.send(CommitNak()) == COMMIT_NAK


def test_release1_passes_commit_bytes_as_messages() -> None:
    assert drive_all_ways(lenient, COMMIT_ACK) == [("message", b"\x06"), EOS]


def test_release2_all_splittings() -> None:
    def make() -> MLLPConnection:
        conn = MLLPConnection(mllp2=True)
        conn.send(Message(MSG_A))
        return conn

    assert drive_all_ways(make, COMMIT_ACK + frame(MSG_B)) == [
        ("CommitAck",),
        ("message", MSG_B),
        EOS,
    ]


def test_byte_at_a_time_buffer_never_rescans() -> None:
    """Indirect O(n) check: the buffer holds only the open frame, never old bytes."""
    conn = MLLPConnection()
    data = (frame(MSG_A) + b"\r\n") * 50
    seen = 0
    for i in range(len(data)):
        conn.receive_data(data[i : i + 1])
        while (event := conn.next_event()) is not NEED_DATA:
            assert event == Message(MSG_A)
            seen += 1
        assert conn.buffered <= len(frame(MSG_A))
    assert seen == 50


@pytest.mark.parametrize(
    "kwargs",
    [
        {"start_byte": 300},
        {"end_byte": -1},
        {"start_byte": 0x1C},  # the same as the end byte
        {"max_message_size": 0},
    ],
)
def test_bad_constructor_arguments_raise_value_error(kwargs: dict[str, int]) -> None:
    # Bad arguments are a ValueError, as in the standard library, not a
    # protocol error (which is about the bytes of a connection).
    with pytest.raises(ValueError):
        MLLPConnection(**kwargs)  # type: ignore[arg-type]
