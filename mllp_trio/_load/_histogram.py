"""A latency histogram with bounded memory: log-linear buckets, about 0.4 % wide.

Recording costs one integer conversion, a ``bit_length`` and a dict update,
so it stays cheap on the hot path; memory grows with the number of distinct
buckets (a few thousand at most), never with the number of messages.
"""

from __future__ import annotations

import math
from collections.abc import Iterable

__all__ = ["LatencyHistogram"]

# 256 sub-buckets per power of two: a bucket is at most 1/128 of its value
# wide, so a percentile read from the bucket's upper end is within 0.8 %.
_SUB_BITS = 8


def _index(nanoseconds: int) -> int:
    shift = nanoseconds.bit_length() - _SUB_BITS
    if shift <= 0:
        return nanoseconds
    return (shift << _SUB_BITS) | (nanoseconds >> shift)


def _upper(index: int) -> int:
    """The largest value (ns) that falls in bucket ``index``."""
    shift = index >> _SUB_BITS
    if shift == 0:
        return index
    mantissa = index & ((1 << _SUB_BITS) - 1)
    return ((mantissa + 1) << shift) - 1


class LatencyHistogram:
    """Latencies in seconds, summarised as count, min, max, mean and percentiles."""

    __slots__ = ("_buckets", "count", "max", "min", "total")

    def __init__(self) -> None:
        self._buckets: dict[int, int] = {}
        self.count = 0
        self.total = 0.0
        self.min = math.inf
        self.max = 0.0

    def record(self, seconds: float) -> None:
        """Add one latency (negative values count as zero)."""
        if seconds < 0.0:
            seconds = 0.0
        index = _index(int(seconds * 1e9))
        buckets = self._buckets
        buckets[index] = buckets.get(index, 0) + 1
        self.count += 1
        self.total += seconds
        if seconds > self.max:
            self.max = seconds
        if seconds < self.min:
            self.min = seconds

    def merge(self, other: LatencyHistogram) -> None:
        """Add every latency of ``other``."""
        for index, n in other._buckets.items():
            self._buckets[index] = self._buckets.get(index, 0) + n
        self.count += other.count
        self.total += other.total
        self.max = max(self.max, other.max)
        self.min = min(self.min, other.min)

    def percentile(self, fraction: float) -> float:
        """The latency (seconds) below which ``fraction`` (0..1) of the samples fall.

        Read from the upper end of its bucket and capped at the exact maximum;
        ``nan`` when there are no samples.
        """
        if not self.count:
            return math.nan
        rank = max(1, math.ceil(fraction * self.count))
        seen = 0
        for index in sorted(self._buckets):
            seen += self._buckets[index]
            if seen >= rank:
                return min(_upper(index) / 1e9, self.max)
        return self.max

    def percentiles(self, fractions: Iterable[float]) -> list[float]:
        """:meth:`percentile` for each fraction."""
        return [self.percentile(f) for f in fractions]

    @property
    def mean(self) -> float:
        """The mean latency in seconds (``nan`` without samples)."""
        return self.total / self.count if self.count else math.nan

    def distribution(self) -> list[tuple[float, float]]:
        """``(latency seconds, fraction at or below it)`` per bucket, for a chart."""
        out: list[tuple[float, float]] = []
        seen = 0
        for index in sorted(self._buckets):
            seen += self._buckets[index]
            out.append((min(_upper(index) / 1e9, self.max), seen / self.count))
        return out
