"""The usage ledger's writer: rows go into a bounded queue on the request path and reach
the database in batches from a background task.

Appending is all a request pays (a length check and a deque append). The writer wakes
every `flush_interval` seconds, or as soon as `batch_size` rows wait, and writes them in
one transaction (rows, daily sums, last use). When the database is down, rows wait and
are retried with backoff; when the queue is full, new rows are dropped and counted
(`dropped`, shown by the admin API and logged), never blocking a request.

Shutdown (SIGTERM: the server finishes the requests in flight, then the gateway's
`close` runs) writes every row still queued. A SIGKILL loses what was queued: at most
`flush_interval` seconds of requests.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Callable, Sequence

from aistack.store import Store, UsageRow

log = logging.getLogger("aistack.ledger")


class Ledger:
    def __init__(
        self,
        store: Store,
        *,
        flush_interval: float = 1.0,
        batch_size: int = 500,
        queue_size: int = 100_000,
        retention_days: int = 30,
        on_written: Callable[[Sequence[UsageRow]], None] | None = None,
    ) -> None:
        self.store = store
        self.flush_interval = flush_interval
        self.batch_size = batch_size
        self.queue_size = queue_size
        self.retention_days = retention_days
        self.on_written = on_written
        self._queue: deque[UsageRow] = deque()
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        # One flush at a time: the background task's, or a report's that flushes first.
        self._lock = asyncio.Lock()
        self._writing: set[asyncio.Task[bool]] = set()
        self._closing = False
        self.written = 0
        self.dropped = 0
        self.failures = 0
        self.last_error = ""

    def __len__(self) -> int:
        return len(self._queue)

    def append(self, row: UsageRow) -> None:
        """On the request path: O(1), never blocks, never raises."""
        q = self._queue
        if len(q) >= self.queue_size:
            self.dropped += 1
            if self.dropped == 1 or self.dropped % 1000 == 0:
                log.error(
                    "usage ledger queue full (%d rows): %d rows dropped so far; "
                    "is the database keeping up?",
                    self.queue_size,
                    self.dropped,
                )
            return
        q.append(row)
        if len(q) >= self.batch_size:
            self._wake.set()

    async def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="aistack-ledger")

    async def _write_some(self, limit: int) -> bool:
        """Write up to one batch; False (rows put back) when the database refused.

        The rows leave the queue before the write and the write runs as its own task,
        so a caller cancelled meanwhile (an admin request whose client left) can
        neither lose them nor have them written twice.
        """
        q = self._queue
        n = min(len(q), self.batch_size, limit)
        if not n:
            return True
        batch = [q.popleft() for _ in range(n)]
        task = asyncio.create_task(self._write(batch))
        self._writing.add(task)
        task.add_done_callback(self._writing.discard)
        return await asyncio.shield(task)

    async def _write(self, batch: list[UsageRow]) -> bool:
        try:
            await self.store.run(self.store.write_usage, batch)
        except Exception as e:
            self._queue.extendleft(reversed(batch))
            self.failures += 1
            msg = f"{type(e).__name__}: {e}".splitlines()[0]
            if msg != self.last_error or self.failures % 100 == 1:
                log.error(
                    "usage ledger: cannot write %d rows (%d queued): %s",
                    len(batch),
                    len(self._queue),
                    msg,
                )
            self.last_error = msg
            return False
        self.written += len(batch)
        if self.last_error:
            log.info("usage ledger: writing again (%d rows queued)", len(self._queue))
            self.last_error = ""
        if self.on_written is not None:
            try:
                self.on_written(batch)
            except Exception:
                log.exception("usage ledger: on_written failed")
        return True

    async def flush(self) -> bool:
        """Write every row queued now; False if the database refused.

        Only the rows queued when it starts: rows that arrive during the writes wait for
        the next flush. (Chasing them kept the writer committing a few rows at a time
        without pause under a steady load: hundreds of commits a second, most of the
        store thread's CPU, and the event loop's tail with it.)
        """
        async with self._lock:
            left = len(self._queue)
            while left > 0 and self._queue:
                n = min(left, self.batch_size)
                if not await self._write_some(n):
                    return False
                left -= n
        return True

    async def _run(self) -> None:
        backoff = self.flush_interval
        next_prune = 0.0
        while not self._closing:
            try:
                await asyncio.wait_for(self._wake.wait(), backoff)
            except TimeoutError:
                pass
            self._wake.clear()
            if await self.flush():
                backoff = self.flush_interval
            else:
                backoff = min(max(backoff * 2, 1.0), 30.0)
            if self.retention_days > 0 and time.monotonic() >= next_prune:
                next_prune = time.monotonic() + 3600
                await self._prune()

    async def _prune(self) -> None:
        from aistack.store.responses import prune_responses

        before = int((time.time() - self.retention_days * 86400) * 1000)
        try:
            n = await self.store.run(self.store.prune, before)
            # Stored responses (store: true) are kept as long as the raw request rows.
            await self.store.run(prune_responses, self.store, before)
        except Exception as e:
            log.error(
                "usage ledger: pruning rows older than %d days failed: %s", self.retention_days, e
            )
            return
        if n:
            log.info("usage ledger: %d rows older than %d days rolled up", n, self.retention_days)

    async def close(self, give_up_after: float = 10.0) -> None:
        """Stop the writer and write every queued row (retrying while the database is down)."""
        self._closing = True
        if self._task is not None:
            # Not cancelled: it finishes the write in hand, sees `_closing` and returns.
            self._wake.set()
            await self._task
            self._task = None
        # Requests cancelled by the server's shutdown finish on the next loop turns.
        for _ in range(3):
            await asyncio.sleep(0)
        deadline = time.monotonic() + give_up_after
        while not await self.flush():
            if time.monotonic() > deadline:
                log.error("usage ledger: %d rows could not be written at shutdown", len(self))
                return
            await asyncio.sleep(0.5)
        if self._writing:
            await asyncio.gather(*self._writing, return_exceptions=True)
        log.info("usage ledger: %d rows written, %d dropped", self.written, self.dropped)

    def status(self) -> dict[str, object]:
        return {
            "queued": len(self._queue),
            "written": self.written,
            "dropped": self.dropped,
            "write_failures": self.failures,
            "last_error": self.last_error,
            "flush_interval": self.flush_interval,
        }
