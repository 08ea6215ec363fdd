"""A sleep that another task can cut short: how background loops learn of new work."""

from __future__ import annotations

import trio

__all__ = ["Waker"]


class Waker:
    """Lets a looping task sleep until a timeout or until someone calls :meth:`wake`.

    A wake-up that arrives while nobody sleeps is kept for the next sleep,
    so no new work is missed between two looks at the queue.
    """

    def __init__(self) -> None:
        self._event = trio.Event()

    def wake(self) -> None:
        """End the current (or next) :meth:`sleep` early."""
        self._event.set()

    async def sleep(self, seconds: float) -> None:
        """Sleep ``seconds``, or less if woken."""
        with trio.move_on_after(seconds):
            await self._event.wait()
        self._event = trio.Event()
