"""The store's plumbing: one DB-API connection on one worker thread, below the event
loop's priority and stepping aside, so a ledger batch does not delay the requests that
arrive while it is written. Subclasses (sqlite.py, postgres.py) connect and run
transactions; the SQL both databases share is in usage.py and base.py.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

T = TypeVar("T")

# Rows a ledger batch writes between two offers of the core and the GIL to the event
# loop's thread; why 32: docs/performance.md, "The store's writer thread".
YIELD_EVERY = 32

# How far the store's thread defers to the event loop's (a nice value); why 19:
# docs/performance.md, "The store's writer thread".
BACKGROUND_NICE = 19


def background() -> None:
    """Lower this thread's CPU priority below the event loop's (Linux: per thread).

    Both share the process's cores, and on a busy core the kernel lets a running thread
    finish its slice (milliseconds) before a waking one runs: a ledger batch would then
    delay the requests that arrive meanwhile. At a lower priority the loop's thread
    preempts it sooner (and write_usage steps aside every YIELD_EVERY rows); the batch
    still runs whenever the loop waits, which is most of the time, and keeps a share of
    a saturated core.
    """
    with contextlib.suppress(AttributeError, OSError):
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), BACKGROUND_NICE)


# Offers the core and the GIL to the event loop's thread (see YIELD_EVERY); where there
# is no sched_yield (Windows), sleep(0) offers the GIL.
step_aside: Callable[[], None] = getattr(os, "sched_yield", None) or (lambda: time.sleep(0))


class SqlThread:
    """A connection used from one thread: `run` calls a method there."""

    kind: str = ""
    placeholder = "?"

    def __init__(self, where: str) -> None:
        self.where = where  # for messages: a path or a URL without its password
        self._conn: Any = None
        self._pool: ThreadPoolExecutor | None = None

    # -- plumbing (subclasses)

    def _connect(self) -> Any:
        raise NotImplementedError

    @contextlib.contextmanager
    def _transaction(self) -> Iterator[Any]:
        raise NotImplementedError
        yield  # pragma: no cover

    def _id_column(self) -> str:
        raise NotImplementedError

    @contextlib.contextmanager
    def _migration_lock(self, timeout: float) -> Iterator[None]:
        yield

    def _is_disconnect(self, e: BaseException) -> bool:
        return False

    # -- plumbing (shared)

    def _sql(self, sql: str) -> str:
        return sql if self.placeholder == "?" else sql.replace("?", self.placeholder)

    @property
    def conn(self) -> Any:
        if self._conn is None:
            self._conn = self._connect()
        return self._conn

    def _reset(self) -> None:
        if self._conn is not None:
            with contextlib.suppress(Exception):
                self._conn.close()
        self._conn = None

    def _rows(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        cur = self.conn.execute(self._sql(sql), params)
        return list(cur.fetchall())

    def close(self) -> None:
        """Close from a thread that is not the store's own (the CLI, tests)."""
        self._reset()
        if self._pool is not None:
            self._pool.shutdown(wait=True)
            self._pool = None

    async def aclose(self) -> None:
        """Close from the event loop: the connection on its own thread, then the thread."""
        if self._pool is not None:
            await self.run(self._reset)
            self._pool.shutdown(wait=False)
            self._pool = None
        else:
            self._reset()

    async def run(self, fn: Callable[..., T], *args: Any) -> T:
        """Call a store method on the store's own thread (one, so calls never overlap)."""
        if self._pool is None:
            self._pool = ThreadPoolExecutor(
                1, thread_name_prefix=f"aistack-{self.kind}", initializer=background
            )
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._pool, self._retrying, fn, args)

    def _retrying(self, fn: Callable[..., T], args: tuple[Any, ...]) -> T:
        try:
            return fn(*args)
        except Exception as e:
            if not self._is_disconnect(e):
                raise
            # The server restarted or dropped us: one fresh connection, one more try.
            self._reset()
            return fn(*args)
