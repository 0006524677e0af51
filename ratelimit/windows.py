"""The windowed budget's arithmetic, shared by the in-process store and mirrored by ``lua/take.lua``.

Algorithm: a **sliding window of fixed sub-buckets, counted conservatively**. A window of
``window_s`` is cut into :data:`BUCKETS` buckets of ``window_s / BUCKETS`` seconds; a charge goes to
the bucket of the current time; a check adds every bucket that may hold a charge made in the last
``window_s`` (the current one and the :data:`BUCKETS` before it, the oldest partly outside the
window). Why this one:

* It never lets more than ``limit`` through in ANY interval of ``window_s`` seconds (every charge of
  the last ``window_s`` is counted when a new one is admitted), which is what "the upstream never
  sees more than the budget" needs. A fixed window lets 2 x limit through around its boundary.
* A burst gets exactly ``limit`` (60 requests in a few seconds against rpm 30: exactly 30 pass),
  unlike a token bucket or GCRA, which refill during the burst and let a few more through.
* Its state is bounded (at most ``BUCKETS + 1`` numbers per key) whatever the traffic, unlike a
  sliding log (one entry per request: a day's token quota would hold every request of the day),
  and amounts can be any number (tokens, dollars), settled later into the bucket they were taken in.

The price of being conservative: capacity comes back up to one bucket (1/60 of the window) late.
"""

import math
from dataclasses import dataclass

BUCKETS = 60  # buckets per window: capacity returns at most window_s / 60 late
EPSILON = 1e-9  # float sums of dollar amounts: 0.1 + 0.2 must fit a limit of 0.3


@dataclass(frozen=True, slots=True)
class Reservation:
    """What :meth:`take` charged, to be settled with the real amount once it is known."""

    key: str
    bucket: int
    amount: float
    window_s: float


@dataclass(frozen=True, slots=True)
class Decision:
    """A budget check. ``reset_s``: seconds until some used capacity comes back (0 when none is used).

    ``retry_after_s`` (refused only): seconds until ``amount`` fits, assuming nothing else is taken;
    ``window_s`` when it can never fit (more than the whole limit). ``reservation``: set when allowed.
    """

    allowed: bool
    remaining: float
    reset_s: float
    retry_after_s: float
    reservation: Reservation | None = None


def bucket_width(window_s: float) -> float:
    return window_s / BUCKETS


def current_bucket(now: float, window_s: float) -> int:
    return math.floor(now / bucket_width(window_s))


def expires_at(bucket: int, window_s: float) -> float:
    """When a bucket stops counting: a window after its own end."""
    return (bucket + 1) * bucket_width(window_s) + window_s


@dataclass(frozen=True, slots=True)
class Charge:
    """One budget of a ``take_all``: take ``amount`` of ``limit`` per ``window_s``."""

    key: str
    amount: float
    limit: float
    window_s: float


def take_all(
    budgets: list[dict[int, float]], charges: list[Charge], now: float, refuse: bool = False
) -> list[Decision]:
    """All or nothing: charge every budget (mutated) if each has room, else none.

    When one has no room (or ``refuse``: something else, a full slot, refuses), every decision is
    refused; a budget that had room has ``retry_after_s`` 0 (it is not the reason).
    """
    used = []
    for buckets, charge in zip(budgets, charges, strict=True):
        current = current_bucket(now, charge.window_s)
        for stale in [index for index in buckets if index < current - BUCKETS]:
            del buckets[stale]
        used.append(sum(buckets.values()))
    room = [u + c.amount <= c.limit + EPSILON for u, c in zip(used, charges, strict=True)]
    return [
        _charge(buckets, charge, spent, now)
        if all(room) and not refuse
        else _refuse(buckets, charge, spent, fits, now)
        for buckets, charge, spent, fits in zip(budgets, charges, used, room, strict=True)
    ]


def _charge(buckets: dict[int, float], charge: Charge, used: float, now: float) -> Decision:
    current = current_bucket(now, charge.window_s)
    buckets[current] = buckets.get(current, 0.0) + charge.amount
    reset_s = expires_at(min(buckets), charge.window_s) - now
    reservation = Reservation(charge.key, current, charge.amount, charge.window_s)
    return Decision(True, max(charge.limit - used - charge.amount, 0.0), reset_s, 0.0, reservation)


def _refuse(buckets: dict[int, float], charge: Charge, used: float, fits: bool, now: float) -> Decision:
    reset_s = expires_at(min(buckets), charge.window_s) - now if buckets else 0.0
    if fits:
        retry_after_s = 0.0
    elif charge.amount > charge.limit:
        retry_after_s = charge.window_s  # can never fit
    else:
        retry_after_s = _retry_after(buckets, used + charge.amount - charge.limit, charge.window_s, now)
    return Decision(False, max(charge.limit - used, 0.0), reset_s, retry_after_s)


def _retry_after(buckets: dict[int, float], excess: float, window_s: float, now: float) -> float:
    """Seconds until the oldest buckets that hold ``excess`` have left the window."""
    freed = 0.0
    for index in sorted(buckets):
        freed += buckets[index]
        if freed + EPSILON >= excess:
            return max(expires_at(index, window_s) - now, 0.0)
    return window_s  # pragma: no cover (the buckets hold at least the excess)


def settle(buckets: dict[int, float], reservation: Reservation, actual: float, now: float) -> None:
    """Correct the reservation's bucket by ``actual - reserved`` while it still counts."""
    if reservation.bucket < current_bucket(now, reservation.window_s) - BUCKETS:
        return  # it has left the window already: nothing to correct
    value = buckets.get(reservation.bucket, 0.0) + actual - reservation.amount
    if value > EPSILON:
        buckets[reservation.bucket] = value
    else:
        buckets.pop(reservation.bucket, None)
