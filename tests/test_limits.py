"""Rate and concurrency limits: the in-process limiter on a clock the test drives, the
Redis limiter against the real server, two instances standing for two replicas, and the
workers' shared table, two instances standing for two workers."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest

from aistack.limits.base import Denied, Quota, Ticket
from aistack.limits.memory import MemoryLimiter
from aistack.limits.redis import RedisLimiter
from aistack.limits.shared import SharedLimiter, create_table
from tests.procs import free_port


class Clock:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


def admitted(x: Ticket | Denied) -> Ticket:
    assert isinstance(x, Ticket), x
    return x


def denied(x: Ticket | Denied) -> Denied:
    assert isinstance(x, Denied), x
    return x


def test_rpm_allows_a_minute_at_once_then_one_every_60_over_rpm_seconds() -> None:
    clock = Clock()
    lim = MemoryLimiter(clock)
    q = Quota(rpm=6)
    for _ in range(6):
        admitted(lim.check("k", q))
    d = denied(lim.check("k", q))
    assert d.limit == "rpm" and d.retry_after == pytest.approx(10.0)
    clock.t += 9.9
    denied(lim.check("k", q))
    clock.t += 0.2
    admitted(lim.check("k", q))
    denied(lim.check("k", q))
    admitted(lim.check("other key", q))  # keys do not share


def test_there_is_no_double_burst_at_a_minute_boundary() -> None:
    clock = Clock()
    clock.t = 59.9
    lim = MemoryLimiter(clock)
    q = Quota(rpm=60)
    assert sum(isinstance(lim.check("k", q), Ticket) for _ in range(100)) == 60
    clock.t = 60.1  # a fixed window would allow 60 more here
    assert sum(isinstance(lim.check("k", q), Ticket) for _ in range(100)) == 0


def test_tpm_is_checked_before_and_charged_after() -> None:
    clock = Clock()
    lim = MemoryLimiter(clock)
    q = Quota(tpm=1000)
    t = admitted(lim.check("k", q))
    lim.done(t, 600)
    t = admitted(lim.check("k", q))  # 600 of 1000 used: still room
    lim.done(t, 600)  # one answer may overshoot; the next request waits
    d = denied(lim.check("k", q))
    assert d.limit == "tpm" and 12 <= d.retry_after <= 13  # 1200 tokens - 1000 = 12 s
    clock.t += 12.5
    admitted(lim.check("k", q))


def test_concurrent_requests_are_capped_and_freed_when_they_end() -> None:
    lim = MemoryLimiter(Clock())
    q = Quota(concurrent=2)
    a, b = admitted(lim.check("k", q)), admitted(lim.check("k", q))
    assert denied(lim.check("k", q)).limit == "concurrent"
    lim.done(a, 0)
    c = admitted(lim.check("k", q))
    lim.done(b, 0)
    lim.done(c, 0)
    assert lim.status()["active"] == 0


def run(fn: Callable[[], Awaitable[None]]) -> None:
    asyncio.run(fn())  # type: ignore[arg-type]


def test_two_replicas_on_one_redis_enforce_one_limit(redis_target: tuple[str, str]) -> None:
    url, prefix = redis_target

    async def main() -> None:
        a = RedisLimiter(url, prefix=prefix + "rpm:")
        b = RedisLimiter(url, prefix=prefix + "rpm:")
        await a.start()
        await b.start()
        try:
            q = Quota(rpm=4)
            got = [await (a if i % 2 else b).admit("k", q) for i in range(4)]
            assert all(isinstance(t, Ticket) and not t.local for t in got)
            da, db = denied(await a.admit("k", q)), denied(await b.admit("k", q))
            assert da.limit == db.limit == "rpm"
            assert 14 <= da.retry_after <= 15.1  # 60/4 s until the next is earned
        finally:
            await a.close()
            await b.close()

    run(main)


def test_admits_at_once_go_in_one_pipeline_and_stay_exact(redis_target: tuple[str, str]) -> None:
    """Admits of one turn of the event loop share a round trip; each gets its own answer."""
    url, prefix = redis_target

    async def main() -> None:
        lim = RedisLimiter(url, prefix=prefix + "batch:")
        await lim.start()
        try:
            q = Quota(rpm=5, concurrent=3)
            got = await asyncio.gather(*(lim.admit("k", q) for _ in range(8)))
            tickets = [t for t in got if isinstance(t, Ticket)]
            assert len(tickets) == 3 and all(not t.local for t in tickets)
            assert {denied(d).limit for d in got if not isinstance(d, Ticket)} == {"concurrent"}
            for t in tickets:
                lim.done(t, 0)
            await lim._flush()
            more = await asyncio.gather(*(lim.admit("k", q) for _ in range(4)))
            assert [isinstance(t, Ticket) for t in more].count(True) == 2  # rpm: 5 in all
            assert denied(await lim.admit("k", q)).limit == "rpm"
            assert lim.errors == 0 and lim.fallbacks == 0
        finally:
            await lim.close()

    run(main)


def test_tokens_and_slots_are_shared_through_redis(redis_target: tuple[str, str]) -> None:
    url, prefix = redis_target

    async def main() -> None:
        a = RedisLimiter(url, prefix=prefix + "tpm:")
        b = RedisLimiter(url, prefix=prefix + "tpm:")
        await a.start()
        await b.start()
        try:
            q = Quota(tpm=100, concurrent=1)
            t = admitted(await a.admit("k", q))
            assert denied(await b.admit("k", q)).limit == "concurrent"
            a.done(t, 150)  # charged and freed from a background pipeline
            for _ in range(100):
                got = await b.admit("k", q)
                if isinstance(got, Denied) and got.limit == "tpm":
                    break
                if isinstance(got, Ticket):
                    b.done(got, 0)
                await asyncio.sleep(0.01)
            else:
                pytest.fail("the other replica never saw the tokens")
            assert b.status()["healthy"] is True
        finally:
            await a.close()
            await b.close()

    run(main)


@pytest.mark.parametrize("on_error", ["local", "reject"])
def test_when_redis_is_down_limits_fall_back_or_refuse(on_error: str) -> None:
    async def main() -> None:
        lim = RedisLimiter(f"redis://127.0.0.1:{free_port()}/0", on_error=on_error, timeout=0.2)
        await lim.start()  # does not fail: requests must keep flowing
        try:
            q = Quota(rpm=1)
            first = await lim.admit("k", q)
            if on_error == "local":
                assert admitted(first).local  # this replica's own counters
                assert denied(await lim.admit("k", q)).limit == "rpm"
            else:
                assert denied(first).limit == "unavailable"
            st = lim.status()
            assert st["healthy"] is False and st["fallbacks"] == 2 - (on_error == "reject")
        finally:
            await lim.close()

    run(main)


def test_images_per_minute_charges_each_image_of_a_request() -> None:
    clock = Clock()
    lim = MemoryLimiter(clock)
    assert lim.check_images("k", 6, 4) is None  # 4 of 6 at once
    d = lim.check_images("k", 6, 3)  # 3 more do not fit until one is earned back
    assert d is not None and d.limit == "ipm" and d.retry_after == pytest.approx(10.0)
    assert lim.check_images("k", 6, 2) is None  # the last 2 do
    clock.t += 20
    assert lim.check_images("k", 6, 2) is None and lim.check_images("k", 6, 1) is not None


def test_images_per_minute_is_shared_through_redis(redis_target: tuple[str, str]) -> None:
    url, prefix = redis_target

    async def main() -> None:
        a = RedisLimiter(url, prefix=prefix + "ipm:")
        b = RedisLimiter(url, prefix=prefix + "ipm:")
        await a.start()
        await b.start()
        try:
            assert await a.admit_images("k", 4, 3) is None
            d = await b.admit_images("k", 4, 2)  # the other replica sees the 3
            assert d is not None and d.limit == "ipm" and 14 <= d.retry_after <= 15.1
            assert await b.admit_images("k", 4, 1) is None
        finally:
            await a.close()
            await b.close()

    run(main)


def test_workers_share_one_table_exactly(tmp_path: Path) -> None:
    """Two workers' limiters on one shared table (limits/shared.py) act as one."""
    path = tmp_path / "limits"
    create_table(path, 2)
    a, b = SharedLimiter(path, 0, 2), SharedLimiter(path, 1, 2)
    q = Quota(rpm=4, concurrent=3)
    got = [x.check("k", q) for x in (a, b, a, b, a)]
    assert [isinstance(t, Ticket) for t in got] == [True, True, True, False, False]
    assert denied(got[3]).limit == "concurrent"  # three in flight between them
    a.done(got[0], 0)  # frees a slot; the rpm is spent by the three admitted...
    assert isinstance(b.check("k", q), Ticket)  # ...plus this fourth
    assert denied(a.check("k", q)).limit == "rpm"
    # tpm charged on one worker is checked on the other.
    t = Quota(tpm=100)
    first = a.check("t", t)
    assert isinstance(first, Ticket)
    a.done(first, 150)  # more than the minute holds
    assert denied(b.check("t", t)).limit == "tpm"
    # A worker that starts again holds no slots any more: its column is cleared.
    c = Quota(concurrent=1)
    assert isinstance(b.check("c", c), Ticket)
    assert denied(a.check("c", c)).limit == "concurrent"
    SharedLimiter(path, 1, 2)  # worker 1 again, after a crash
    assert isinstance(a.check("c", c), Ticket)
