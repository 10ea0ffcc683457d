"""Time as the store and budgets count it: ms since the epoch, UTC days, budget periods."""

from __future__ import annotations

import time
from datetime import UTC, datetime
from typing import Literal, overload

Period = Literal["day", "week", "month"]  # a budget's


@overload
def iso(ms: int) -> str: ...
@overload
def iso(ms: None) -> None: ...
@overload
def iso(ms: int | None) -> str | None: ...


def iso(ms: int | None) -> str | None:
    """ms since the epoch as ISO 8601 in UTC: 2026-11-24T04:32:16Z."""
    if ms is None:
        return None
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(ms / 1000))


def now_ms() -> int:
    return time.time_ns() // 1_000_000


_DAYS: dict[int, str] = {}


def day_of(ms: int) -> str:
    """The UTC date of `ms` as YYYY-MM-DD (memoised: a batch of rows shares a day or two)."""
    n = ms // 86_400_000
    d = _DAYS.get(n)
    if d is None:
        if len(_DAYS) > 4096:
            _DAYS.clear()
        d = _DAYS[n] = time.strftime("%Y-%m-%d", time.gmtime(n * 86_400))
    return d


def day_start_ms(day: str) -> int:
    return int(datetime.strptime(day, "%Y-%m-%d").replace(tzinfo=UTC).timestamp() * 1000)


def period_start(period: Period, ms: int) -> str:
    """The first UTC day of the budget period containing `ms`."""
    d = datetime.fromtimestamp(ms / 1000, UTC)
    if period == "month":
        d = d.replace(day=1)
    elif period == "week":  # ISO weeks start on Monday
        d = datetime.fromordinal(d.toordinal() - d.weekday()).replace(tzinfo=UTC)
    return d.strftime("%Y-%m-%d")


def period_end_ms(period: Period, ms: int) -> int:
    """When the budget period containing `ms` ends (the next one starts)."""
    start = datetime.strptime(period_start(period, ms), "%Y-%m-%d").replace(tzinfo=UTC)
    if period == "day":
        nxt = datetime.fromordinal(start.toordinal() + 1)
    elif period == "week":
        nxt = datetime.fromordinal(start.toordinal() + 7)
    else:
        nxt = start.replace(year=start.year + start.month // 12, month=start.month % 12 + 1)
    return int(nxt.replace(tzinfo=UTC).timestamp() * 1000)
