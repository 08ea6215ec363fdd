"""The sans-IO exchange rules, without sockets: commit wait, NAK, resend, ACK timeout."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from mllp_trio.proto import (
    NEED_DATA,
    Delivered,
    DeliveryFailure,
    Exchange,
    HLLPConnection,
    HLLPNak,
    LocalProtocolError,
    Message,
    MLLPConnection,
    NakReason,
    Rejected,
    Resend,
)

SB, EB, CR = b"\x0b", b"\x1c", b"\r"
ACK_BLOCK, NAK_BLOCK = SB + b"\x06" + EB + CR, SB + b"\x15" + EB + CR
MSG = Message(b"MSH|^~\\&|A|B|C|D|20240101||ADT^A01|X1|P|2.5\r")


def r2(retries: int = 2) -> Exchange:
    return Exchange(MLLPConnection(mllp2=True), retries=retries)


def feed(exchange: Exchange, data: bytes) -> object:
    exchange.receive_data(data)
    return exchange.next_event()


def test_release2_commit_ack_delivers() -> None:
    ex = r2()
    assert ex.send(MSG) == SB + MSG.data + EB + CR
    assert ex.awaiting_commit
    assert feed(ex, ACK_BLOCK) == Delivered()
    assert not ex.awaiting_commit


def test_release2_nak_resends_up_to_the_retry_count_then_fails() -> None:
    ex = r2(retries=2)
    ex.send(MSG)
    for attempt in (2, 3):
        event = feed(ex, NAK_BLOCK)
        assert isinstance(event, Resend)
        assert (event.attempt, event.data) == (attempt, SB + MSG.data + EB + CR)
    assert feed(ex, NAK_BLOCK) == DeliveryFailure(3, "commit NAK")


def test_release2_timeout_resends_and_a_late_acknowledgement_is_tolerated() -> None:
    ex = r2()
    ex.send(MSG)
    event = ex.timeout()
    assert isinstance(event, Resend)
    assert event.attempt == 2
    # The first copy's ACK arrives late, then the resend's: both are fine,
    # the second is dropped rather than taken for a protocol fault.
    assert feed(ex, ACK_BLOCK) == Delivered()
    assert feed(ex, ACK_BLOCK) is NEED_DATA
    # ...and the exchange goes on with the next block.
    ex.send(MSG)
    assert feed(ex, ACK_BLOCK) == Delivered()


def test_release2_timeouts_exhaust_the_retries() -> None:
    ex = r2(retries=1)
    ex.send(MSG)
    assert isinstance(ex.timeout(), Resend)
    assert ex.timeout() == DeliveryFailure(2, "no acknowledgement in time")


def test_timeout_without_an_outstanding_block_is_a_local_error() -> None:
    with pytest.raises(LocalProtocolError):
        r2().timeout()


def test_release2_receiver_commits_or_refuses() -> None:
    ex = r2()
    event = feed(ex, SB + MSG.data + EB + CR)
    assert event == MSG
    assert ex.commit() == ACK_BLOCK
    feed(ex, SB + MSG.data + EB + CR)
    assert ex.refuse() == NAK_BLOCK


def test_release2_invalid_frame_is_answered_with_a_commit_nak() -> None:
    ex = r2()
    event = feed(ex, SB + EB + CR)  # an empty frame
    assert isinstance(event, Rejected)
    assert event.answer == NAK_BLOCK


def test_release1_rejections_need_no_answer_and_commit_is_empty() -> None:
    ex = Exchange(MLLPConnection())
    event = feed(ex, SB + EB + CR)
    assert isinstance(event, Rejected)
    assert event.answer == b""
    feed(ex, SB + MSG.data + EB + CR)
    assert ex.commit() == b"" and ex.refuse() == b""


def test_release2_send_refuses_content_that_reads_as_a_commit_block() -> None:
    # Regression: MLLPConnection(release 2).send(Message(b"\x06")) used to emit
    # what the peer reads as a commit ACK.
    for content in (b"\x06", b"\x15"):
        with pytest.raises(LocalProtocolError, match="commit acknowledgement"):
            MLLPConnection(mllp2=True).send(Message(content))
    assert MLLPConnection().send(Message(b"\x06")) == SB + b"\x06" + EB + CR  # release 1: fine


def test_hllp_nak_block_resends_the_same_block() -> None:
    peer = HLLPConnection()
    ex = Exchange(HLLPConnection(), retries=1)
    block = ex.send(MSG)
    event = feed(ex, peer.send(HLLPNak(NakReason.CHECKSUM)))
    assert isinstance(event, Resend)
    assert event.data == block
    assert feed(ex, peer.send(HLLPNak(NakReason.OTHER))) == DeliveryFailure(
        2, "NAK block, reason G"
    )


def test_hllp_data_block_settles_our_block() -> None:
    peer = HLLPConnection()
    ex = Exchange(HLLPConnection())
    ex.send(MSG)
    assert feed(ex, peer.send(Message(b"ACK"))) == Message(b"ACK")
    # A NAK now could not be about our block: nothing to resend.
    event = feed(ex, peer.send(HLLPNak(NakReason.OTHER)))
    assert isinstance(event, DeliveryFailure)


def test_hllp_bad_block_is_answered_with_its_nak() -> None:
    ex = Exchange(HLLPConnection())
    good = HLLPConnection().send(MSG)
    damaged = good[:-5] + b"000" + good[-2:]  # wrong checksum
    event = feed(ex, damaged)
    assert isinstance(event, Rejected)
    nak = HLLPConnection()
    nak.receive_data(event.answer)
    assert nak.next_event() == HLLPNak(NakReason.CHECKSUM)


def test_retries_must_not_be_negative() -> None:
    with pytest.raises(ValueError):
        Exchange(MLLPConnection(), retries=-1)


@given(st.lists(st.sampled_from(["ack", "nak", "timeout"]), max_size=12), st.integers(0, 4))
def test_release2_sender_never_sends_more_than_retries_plus_one(
    answers: list[str], retries: int
) -> None:
    ex = r2(retries=retries)
    ex.send(MSG)
    sent, outcome = 1, None
    for answer in answers:
        if answer == "timeout":
            event: object = ex.timeout()
        else:
            event = feed(ex, ACK_BLOCK if answer == "ack" else NAK_BLOCK)
            if event is NEED_DATA:  # a late acknowledgement, dropped
                continue
        if isinstance(event, Resend):
            sent += 1
        else:
            outcome = event
            break
    assert sent <= retries + 1
    if isinstance(outcome, DeliveryFailure):
        assert outcome.attempts == retries + 1 == sent
    else:
        assert outcome in (None, Delivered())
