"""A listener-wide budget of bytes held in receive buffers, and shedding when it runs out."""

from __future__ import annotations

from collections.abc import Callable

import trio

__all__ = ["MemoryBudget"]


class MemoryBudget:
    """How many bytes the receive buffers of all connections hold, against a limit.

    Each connection charges what its receive buffer holds (an open frame,
    mostly) after every read and event. When the total reaches ``limit``
    the holders of the most bytes are shed first (their ``shed`` callback
    closes the connection), as few as bring the total back under the
    limit, and new reads wait in :meth:`wait_for_room` until it is. A
    connection between messages holds nothing, so a well-behaved client
    loses at most the moments a shed connection takes to close. The model
    is the overload manager of proxies such as Envoy.

    Reads already waiting on the network when the limit is reached still
    complete, so the total may pass the limit by up to one read per
    connection.

    Args:
        limit: Bytes; ``None`` counts without a limit.
    """

    def __init__(self, limit: int | None) -> None:
        if limit is not None and limit <= 0:
            raise ValueError(f"memory budget must be positive or None, got {limit!r}")
        self.limit = limit
        #: Bytes held now, by every holder together.
        self.used = 0
        #: Holders shed since the start.
        self.shed_count = 0
        self._held: dict[object, int] = {}
        self._shed: dict[object, Callable[[], None]] = {}
        self._shedding: set[object] = set()
        self._room = trio.Event()
        self._room.set()

    def register(self, holder: object, shed: Callable[[], None]) -> None:
        """Count ``holder`` in; ``shed()`` is called to close it when the budget runs out."""
        self._held.setdefault(holder, 0)
        self._shed[holder] = shed

    def charge(self, holder: object, amount: int) -> None:
        """Record that ``holder`` now holds ``amount`` bytes."""
        old = self._held.get(holder, 0)
        if amount == old:
            return
        self._held[holder] = amount
        self.used += amount - old
        limit = self.limit
        if limit is None:
            return
        if self.used >= limit:
            self._overload(limit)
        elif not self._room.is_set():
            self._room.set()

    def release(self, holder: object) -> None:
        """``holder`` is gone: nothing it held counts any more."""
        self.charge(holder, 0)
        self._held.pop(holder, None)
        self._shed.pop(holder, None)
        self._shedding.discard(holder)

    def held_by(self, holder: object) -> int:
        """Bytes ``holder`` holds now."""
        return self._held.get(holder, 0)

    def is_shed(self, holder: object) -> bool:
        """Whether ``holder`` was told to close to make room."""
        return holder in self._shedding

    async def wait_for_room(self) -> None:
        """Wait until the total is under the limit (a checkpoint only when it must wait)."""
        limit = self.limit
        while limit is not None and self.used >= limit:
            await self._room.wait()

    def _overload(self, limit: int) -> None:
        if self._room.is_set():
            self._room = trio.Event()
        # What will remain once the holders already told to close are gone.
        remaining = self.used - sum(self._held.get(h, 0) for h in self._shedding)
        if remaining < limit:
            return
        candidates = sorted(
            ((amount, id(h), h) for h, amount in self._held.items() if amount > 0),
            key=lambda item: item[:2],
            reverse=True,
        )
        for amount, _, holder in candidates:
            if remaining < limit:
                break
            if holder in self._shedding or holder not in self._shed:
                continue
            self._shedding.add(holder)
            self.shed_count += 1
            remaining -= amount
            self._shed[holder]()
