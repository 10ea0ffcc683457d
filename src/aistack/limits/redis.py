"""Limits shared through Redis: N replicas enforce one limit.

A request costs one round trip: one Lua script checks tpm, rpm and concurrency for the
key and takes what it admits (the admits of one turn of the event loop go out together
in one pipeline), atomically, on the Redis server's clock (replicas'
clocks may disagree; Redis's is the one clock they share). After the answer, charging
its tokens and freeing its slot go out in a pipeline from a background task, off the
response path.

Concurrency is a sorted set of the key's in-flight requests with a lease, so a replica
that dies mid-request leaks its slots for `lease` seconds at most.

When Redis cannot be reached the limiter does what `on_redis_error` says: "local"
(the default) falls back to this replica's own counters for `retry_after` seconds, so a
runaway app is still stopped (at up to N times the limit across N replicas) and a
Redis outage never takes the AI apps down with it; "reject" answers 503 instead.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import time
from collections import deque
from typing import Any

from aistack.limits.base import WINDOW, Denied, Quota, Ticket
from aistack.limits.memory import MemoryLimiter

log = logging.getLogger("aistack.limits")

_ADMIT = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local window = tonumber(ARGV[5])
local rpm, tpm, conc = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
if tpm > 0 then
  local tat = tonumber(redis.call('GET', KEYS[2]) or '0')
  if tat - now >= window then
    return {0, 'tpm', math.ceil(tat - now - window + window / tpm)}
  end
end
local rtat = 0
if rpm > 0 then
  rtat = math.max(tonumber(redis.call('GET', KEYS[1]) or '0'), now) + window / rpm
  if rtat - now > window + 0.001 then
    return {0, 'rpm', math.ceil(rtat - now - window)}
  end
end
if conc > 0 then
  redis.call('ZREMRANGEBYSCORE', KEYS[3], '-inf', now)
  if redis.call('ZCARD', KEYS[3]) >= conc then
    return {0, 'concurrent', 1000}
  end
  local lease = tonumber(ARGV[6])
  redis.call('ZADD', KEYS[3], now + lease, ARGV[4])
  redis.call('PEXPIRE', KEYS[3], lease)
end
if rpm > 0 then
  redis.call('SET', KEYS[1], string.format('%.3f', rtat), 'PX', math.ceil(rtat - now) + 1)
end
return {1, '', 0}
"""

_IMAGES = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local per, n, window = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
local tat = math.max(tonumber(redis.call('GET', KEYS[1]) or '0'), now) + n * window / per
if tat - now > window + 0.001 then
  return {0, math.ceil(tat - now - window)}
end
redis.call('SET', KEYS[1], string.format('%.3f', tat), 'PX', math.ceil(tat - now) + 1)
return {1, 0}
"""

_DONE = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local tokens, tpm = tonumber(ARGV[1]), tonumber(ARGV[2])
if tpm > 0 and tokens > 0 then
  local tat = math.max(tonumber(redis.call('GET', KEYS[1]) or '0'), now)
    + tokens * tonumber(ARGV[4]) / tpm
  redis.call('SET', KEYS[1], string.format('%.3f', tat), 'PX', math.ceil(tat - now) + 1)
end
if ARGV[3] ~= '' then
  redis.call('ZREM', KEYS[2], ARGV[3])
end
return 1
"""


_Admit = tuple[list[str], list[Any], "asyncio.Future[Any]"]  # keys, args, the answer


class RedisLimiter:
    kind = "redis"

    def __init__(
        self,
        url: str,
        *,
        prefix: str = "aistack:",
        on_error: str = "local",
        lease: float = 900.0,
        timeout: float = 0.5,
        retry_after: float = 5.0,
    ) -> None:
        self.url = url
        self.prefix = prefix
        self.on_error = on_error
        self.lease_ms = int(lease * 1000)
        self.timeout = timeout
        self.retry_after = retry_after
        self.local = MemoryLimiter()
        self._redis: Any = None
        self._admit: Any = None
        self._done: Any = None
        self._images: Any = None
        self._pending: deque[tuple[Ticket, int]] = deque()
        # Admits waiting for this turn of the event loop to end (see _run_admits).
        self._admits: list[_Admit] = []
        self._sending: set[asyncio.Task[None]] = set()
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._down_until = 0.0
        self.errors = 0  # Redis calls that failed
        self.fallbacks = 0  # requests decided locally because Redis was down

    def _keys(self, key_id: str) -> list[str]:
        # The braces make a Redis Cluster keep one key's three counters on one shard.
        base = f"{self.prefix}rl:{{{key_id}}}:"
        return [base + "rpm", base + "tpm", base + "active"]

    async def start(self) -> None:
        try:
            import redis.asyncio as aioredis
        except ImportError:
            raise RuntimeError(
                "redis_url is set but the redis package is not installed: "
                "pip install 'aistack[redis]'"
            ) from None
        self._redis = aioredis.Redis.from_url(
            self.url,
            socket_timeout=self.timeout,
            socket_connect_timeout=self.timeout,
            retry_on_timeout=False,
        )
        self._admit = self._redis.register_script(_ADMIT)
        self._done = self._redis.register_script(_DONE)
        self._images = self._redis.register_script(_IMAGES)
        try:
            await self._redis.ping()
        except Exception as e:
            self._failed(e)
        self._task = asyncio.create_task(self._flusher(), name="aistack-limits-redis")

    def _failed(self, e: BaseException) -> None:
        self.errors += 1
        now = time.monotonic()
        if now >= self._down_until:
            log.error(
                "redis %s: %s; limits are %s for the next %.0f s",
                self.url.split("@")[-1],
                type(e).__name__ if not str(e) else str(e),
                "per replica" if self.on_error == "local" else "refusing requests",
                self.retry_after,
            )
        self._down_until = now + self.retry_after

    def _fallback(self, key_id: str, quota: Quota) -> Ticket | Denied:
        self.fallbacks += 1
        if self.on_error == "reject":
            return Denied("unavailable", self.retry_after)
        return self.local.check(key_id, quota)

    async def admit(self, key_id: str, quota: Quota) -> Ticket | Denied:
        if time.monotonic() < self._down_until:
            return self._fallback(key_id, quota)
        slot = secrets.token_hex(8) if quota.concurrent else ""
        args = [
            quota.rpm or 0, quota.tpm or 0, quota.concurrent or 0, slot,
            int(WINDOW * 1000), self.lease_ms,
        ]  # fmt: skip
        fut: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._admits.append((self._keys(key_id), args, fut))
        if len(self._admits) == 1:  # the first of this turn of the loop sends them all
            asyncio.get_running_loop().call_soon(self._send_admits)
        try:
            ok, limit, retry_ms = await fut
        except Exception as e:
            self._failed(e)
            return self._fallback(key_id, quota)
        if not ok:
            name = limit.decode() if isinstance(limit, bytes) else str(limit)
            return Denied(name, max(int(retry_ms), 1) / 1000)
        return Ticket(key_id, quota, slot, local=False)

    def _send_admits(self) -> None:
        batch, self._admits = self._admits, []
        task = asyncio.create_task(self._run_admits(batch))
        self._sending.add(task)
        task.add_done_callback(self._sending.discard)

    async def _run_admits(
        self, batch: list[tuple[list[str], list[Any], asyncio.Future[Any]]]
    ) -> None:
        """The admits of one turn of the event loop, in one pipeline: one round trip and
        one write for all of them. redis-py spends tens of µs of Python on each command
        it sends alone (a connection from the pool, the packing, the reply), which under
        load was most of what a request cost in replica mode."""
        try:
            if len(batch) == 1:
                keys, args, _ = batch[0]
                got: list[Any] = [await self._admit(keys=keys, args=args)]
            else:
                sha = self._admit.sha
                async with self._redis.pipeline(transaction=False) as pipe:
                    for keys, args, _ in batch:
                        pipe.evalsha(sha, len(keys), *keys, *args)
                    got = await pipe.execute(raise_on_error=False)
                for i, (keys, args, _) in enumerate(batch):
                    if isinstance(got[i], Exception) and "NOSCRIPT" in str(got[i]):
                        got[i] = await self._admit(keys=keys, args=args)  # loads it once
        except Exception as e:
            for *_, fut in batch:
                if not fut.done():
                    fut.set_exception(e)
            return
        for (*_, fut), answer in zip(batch, got, strict=True):
            if fut.done():  # its request went away meanwhile
                continue
            if isinstance(answer, Exception):
                fut.set_exception(answer)
            else:
                fut.set_result(answer)

    async def admit_images(self, key_id: str, per_minute: int, n: int) -> Denied | None:
        if time.monotonic() < self._down_until:
            self.fallbacks += 1
            if self.on_error == "reject":
                return Denied("unavailable", self.retry_after)
            return self.local.check_images(key_id, per_minute, n)
        key = f"{self.prefix}rl:{{{key_id}}}:ipm"
        try:
            ok, retry_ms = await self._images(keys=[key], args=[per_minute, n, int(WINDOW * 1000)])
        except Exception as e:
            self._failed(e)
            self.fallbacks += 1
            if self.on_error == "reject":
                return Denied("unavailable", self.retry_after)
            return self.local.check_images(key_id, per_minute, n)
        return None if ok else Denied("ipm", max(int(retry_ms), 1) / 1000)

    def done(self, ticket: Ticket, tokens: int) -> None:
        if ticket.local:
            self.local.done(ticket, tokens)
            return
        if not ((ticket.quota.tpm and tokens > 0) or ticket.slot):
            return
        self._pending.append((ticket, tokens))
        self._wake.set()

    async def _flush(self) -> None:
        batch = []
        while self._pending:
            batch.append(self._pending.popleft())
        if not batch:
            return
        try:
            async with self._redis.pipeline(transaction=False) as pipe:
                for t, tokens in batch:
                    k = self._keys(t.key_id)
                    args = [tokens, t.quota.tpm or 0, t.slot, int(WINDOW * 1000)]
                    await self._done(keys=[k[1], k[2]], args=args, client=pipe)
                await pipe.execute()
        except Exception as e:
            # Lost charges under-count for a minute at most; a lost release frees
            # itself when its lease ends.
            self._failed(e)

    async def _flusher(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            await self._flush()

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass
            self._task = None
        if self._redis is not None:
            if time.monotonic() >= self._down_until:
                await self._flush()
            await self._redis.aclose()
            self._redis = None

    def status(self) -> dict[str, object]:
        return {
            "kind": self.kind,
            "healthy": time.monotonic() >= self._down_until,
            "on_redis_error": self.on_error,
            "errors": self.errors,
            "fallbacks": self.fallbacks,
            "pending": len(self._pending),
        }
