"""The one timeout mechanism, on Trio's mock clock."""

from __future__ import annotations

import math

import pytest
import trio
import trio.testing

from mllp_trio._io._watchdog import Expiry, Watchdog


async def run_guarded(watchdog: Watchdog, body: object) -> float:
    """Run ``body`` under the watchdog's scope; return the Trio time it ended."""
    async with trio.open_nursery() as nursery:
        nursery.start_soon(watchdog.run)
        with watchdog.scope:
            await body()  # type: ignore[operator]
        nursery.cancel_scope.cancel()
    return trio.current_time()


async def test_fires_at_the_deadline_with_its_reason(
    autojump_clock: trio.testing.MockClock,
) -> None:
    watchdog = Watchdog(trio.CancelScope(), poll=1.0)

    async def body() -> None:
        watchdog.arm(5.0, Expiry.FRAME)
        await trio.sleep_forever()

    start = trio.current_time()
    end = await run_guarded(watchdog, body)
    assert watchdog.expired is Expiry.FRAME
    assert 5.0 <= end - start <= 6.0  # never early, at most one poll late
    assert str(Expiry.FRAME) == "timed out waiting for the frame to complete"


async def test_a_deadline_moved_earlier_while_sleeping_is_noticed_within_one_poll(
    autojump_clock: trio.testing.MockClock,
) -> None:
    # The poll invariant: the task looks again at least every `poll` seconds.
    watchdog = Watchdog(trio.CancelScope(), poll=2.0)

    async def body() -> None:
        watchdog.arm_at(math.inf, Expiry.IDLE)
        await trio.sleep(0.5)  # the watchdog now sleeps for its poll interval
        watchdog.arm(2.0, Expiry.WRITE)  # due at 2.5
        await trio.sleep_forever()

    start = trio.current_time()
    end = await run_guarded(watchdog, body)
    assert watchdog.expired is Expiry.WRITE
    assert 2.5 <= end - start <= 4.5


async def test_disarm_keeps_the_connection(autojump_clock: trio.testing.MockClock) -> None:
    watchdog = Watchdog(trio.CancelScope(), poll=1.0)

    async def body() -> None:
        for _ in range(10):
            watchdog.arm(3.0, Expiry.WRITE)
            await trio.sleep(2.0)
            watchdog.disarm()

    await run_guarded(watchdog, body)
    assert watchdog.expired is None


async def test_a_deadline_for_another_scope_cancels_only_that_scope(
    autojump_clock: trio.testing.MockClock,
) -> None:
    watchdog = Watchdog(trio.CancelScope(), poll=1.0)
    after: list[str] = []

    async def body() -> None:
        with trio.CancelScope() as wait:
            watchdog.arm_at(trio.current_time() + 3, Expiry.ACK, wait)
            await trio.sleep_forever()
        assert wait.cancelled_caught
        after.append("connection still up")
        # The watchdog goes on watching the connection afterwards.
        watchdog.arm(2.0, Expiry.IDLE)
        await trio.sleep_forever()

    await run_guarded(watchdog, body)
    assert after == ["connection still up"]
    assert watchdog.expired is Expiry.IDLE


def test_poll_must_be_positive_and_not_exceed_an_armed_timeout() -> None:
    with pytest.raises(ValueError):
        Watchdog(trio.CancelScope(), poll=0)
    watchdog = Watchdog(trio.CancelScope(), poll=5.0)

    async def arm_short() -> None:
        with pytest.raises(ValueError, match="shorter than the watchdog's poll"):
            watchdog.arm(1.0, Expiry.ACK)

    trio.run(arm_short)


async def test_direct_mode_puts_the_deadline_on_the_scope(
    autojump_clock: trio.testing.MockClock,
) -> None:
    # The client's way: no task, Trio enforces the deadline on the scope.
    watchdog = Watchdog(trio.CancelScope(), poll=None)
    with trio.CancelScope() as scope:
        watchdog.retarget(scope)
        watchdog.arm(4.0, Expiry.CONNECT)
        await trio.sleep_forever()
    assert watchdog.check() is Expiry.CONNECT
    with trio.CancelScope() as scope:
        watchdog.retarget(scope)
        watchdog.arm(4.0, Expiry.CONNECT)
        await trio.sleep(1)
        watchdog.arm(20.0, Expiry.ACK)  # a new deadline replaces the first
        await trio.sleep(10)
    assert watchdog.check() is None
    # A deadline left armed when the scope ends does not outlive it.
    await trio.sleep(30)
    assert watchdog.check() is None
    with pytest.raises(RuntimeError):
        await watchdog.run()
