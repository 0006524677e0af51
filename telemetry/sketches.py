"""Latency percentiles with a stated relative error, mergeable across processes: DDSketch.

A :class:`LatencySketch` is DataDog's DDSketch (the ``ddsketch`` package): durations are counted in
logarithmic bins of ratio ``gamma = (1 + a) / (1 - a)``, so any quantile it reports is within
``a`` (:data:`RELATIVE_ACCURACY`, 0.5%) of the true sample at that rank, whatever the
distribution: uniform, bimodal or heavy-tailed. Two sketches of the same accuracy merge by adding
their bins, exactly as if every duration had been added to one of them, which is what lets each
worker (and machine) sketch its own batch and the database rows add them up.

The quantile ``q`` is the sample of rank ``floor(q * (n - 1))`` in sorted order (0-based), the
definition ``ddsketch`` uses. Durations below :data:`MIN_MS` are counted as ``MIN_MS``, so every
value falls in a positive bin and the bins span a bounded range: from 1 µs to ten minutes that
is at most ~2,100 bins (one float each), whatever the number of requests.

Stored form (:meth:`LatencySketch.to_json`): ``{"min_key": k, "counts": [c_k, c_k+1, ...]}``, the
counts of consecutive bins from the lowest non-empty one; ``{}`` when empty. The accuracy is a
constant of the schema: changing it would make stored sketches unmergeable with new ones.
"""

from collections.abc import Mapping, Sequence
from typing import Any

from ddsketch.ddsketch import BaseDDSketch
from ddsketch.mapping import LogarithmicMapping
from ddsketch.store import DenseStore

RELATIVE_ACCURACY = 0.005  # 0.5%: with two-decimal rounding of >= 1 ms values, within 1% in the API
MIN_MS = 0.001  # durations below 1 µs are counted as 1 µs (the bins then have a lower end)
_MAPPING = LogarithmicMapping(RELATIVE_ACCURACY)


class LatencySketch:
    """Durations (ms) in a DDSketch plus their exact sum, so the mean is exact too."""

    __slots__ = ("_sketch", "_store", "total_ms")

    def __init__(self, min_key: int = 0, counts: Sequence[float] = (), total_ms: float = 0.0) -> None:
        # The store is kept beside the sketch: its bins are what gets stored (to_json). Stored
        # bins are set as the store's documented attributes at once: adding them one by one
        # re-centres the list as it grows (~0.5 ms for 1,000 bins on the writer thread).
        self._store = DenseStore()
        if counts:
            self._store.bins = [float(count) for count in counts]
            self._store.offset = self._store.min_key = min_key
            self._store.max_key = min_key + len(counts) - 1
            self._store.count = sum(self._store.bins)
        self._sketch = BaseDDSketch(_MAPPING, self._store, DenseStore(), 0.0)
        self.total_ms = total_ms

    @classmethod
    def from_json(cls, stored: Mapping[str, Any] | None, total_ms: float = 0.0) -> "LatencySketch":
        """The sketch a database row holds (``to_json``'s form); empty for ``{}`` or None."""
        if not stored:
            return cls(total_ms=total_ms)
        return cls(int(stored["min_key"]), stored["counts"], total_ms)

    def to_json(self) -> dict[str, Any]:
        store = self._store
        if not store.count:
            return {}
        first, last = store.min_key, store.max_key
        counts = store.bins[first - store.offset : last - store.offset + 1]
        return {"min_key": first, "counts": [int(c) if c == int(c) else c for c in counts]}

    @property
    def count(self) -> int:
        return int(self._sketch.count)

    def observe(self, duration_ms: float) -> None:
        self._sketch.add(max(duration_ms, MIN_MS))
        self.total_ms += duration_ms

    def merge(self, other: "LatencySketch") -> None:
        """Add ``other``'s durations to this sketch (``other`` is unchanged)."""
        self._sketch.merge(other._sketch)
        self.total_ms += other.total_ms

    def mean(self) -> float | None:
        count = self.count
        return self.total_ms / count if count else None

    def percentile(self, q: float) -> float | None:
        """The q-quantile (0 <= q <= 1) within 0.5% of the sample of rank floor(q(n-1)); None when empty."""
        return self._sketch.get_quantile_value(q)
