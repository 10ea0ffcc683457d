"""aistack's HTTP/1.1 server: an asyncio protocol on uvloop, parsing with httptools, calling
the routes directly.

Why not an ASGI server: uvicorn spent about a third of the gateway's CPU per request
here, in the ASGI cycle (a scope dict, message dicts, an event per request) and in two
system calls per answer (head, then body). This one writes a whole answer in one call,
builds the request's header table while parsing, and sees a disconnect as the
connection closing (no task per request to watch for it). Numbers in docs/performance.md.

What it does, HTTP/1.1 as the apps speak it: keep-alive (closed after `keepalive` idle
seconds), pipelining (answered in order), chunked request bodies, `Expect: 100-continue`,
a limit on the header block (431), bodies over the limit refused early (413, then the
connection closes), answers whole (Content-Length) or streamed (chunked), back-pressure
from slow readers, and a graceful stop: on SIGTERM or SIGINT it stops accepting, lets
requests in flight finish (up to `graceful` seconds: server.shutdown_grace), ends those
still running as cut by the server (a stream with its dialect's error event, the rest
with a 503, each recorded so), then stops the gateway, which flushes the usage ledger
before it closes the backends.

And what it does against slow and hostile clients (`Limits`, docs/configuration.md):
a head must arrive whole within `head_timeout` of its first byte (or of the connection)
and a body within `body_timeout` of its head, else a 408 and a close; the body of a
request answered before it was read (a 401, 404, 413) is parsed and dropped, never
kept; past `max_connections` a new connection gets a 503 with Retry-After; a client that
stops reading an answer is cut after `write_timeout`; pipelined requests are queued up
to a count and a number of body bytes, then reading pauses. One timer a second checks
every deadline (`Server._reap`): the request path only stores a number.

Every answer the server makes itself (400, 408, 413, 431, 503) is JSON in the dialect
of the route its path names (the route table's `dialect_at`), like the routes' own.
"""

from __future__ import annotations

import asyncio
import logging
import signal
from collections.abc import Sequence

from aistack.http.app import App
from aistack.http.connection import Connection
from aistack.http.server_limits import CUT_WAIT, TICK, Limits, default_max_connections
from aistack.http.wire import WORKER

__all__ = ["Limits", "Server"]

log = logging.getLogger("aistack.http")


class Server:
    """Listens, runs the app's start-up and shut-down, closes idle keep-alive connections
    and those past a deadline (one timer for all)."""

    def __init__(
        self,
        app: App,
        host: str,
        port: int,
        keepalive: float = 5.0,
        graceful: float = 10.0,
        extra: Sequence[tuple[App, str, int]] = (),
        worker: int | None = None,
        limits: Limits | None = None,
    ) -> None:
        self.app = app
        # One of several workers on the same port (SO_REUSEPORT: the kernel spreads the
        # connections over the workers' listeners); its index goes out on every answer.
        self.worker = worker
        if worker is not None:
            WORKER[:] = [b"x-aistack-worker: %d\r\n" % worker]
        # More listeners, each with an app of its own on the same gateway (the vector
        # store's own port): started and stopped with the main one.
        self.extra = tuple(extra)
        self.host = host
        self.port = port
        self.keepalive = keepalive
        self.graceful = graceful
        limits = limits or Limits()
        self.head_timeout = limits.head_timeout
        self.body_timeout = limits.body_timeout
        self.write_timeout = limits.write_timeout
        self.max_connections = limits.max_connections or default_max_connections()
        # Past the cap, this many more wait for their heads (to answer in their dialect).
        self.overflow = max(16, self.max_connections // 8)
        self.refused = 0  # connections answered 503 since the last tick
        self.now = 0.0  # the loop's clock at the last tick: deadlines are set against it
        self.connections: set[Connection] = set()
        self.loop: asyncio.AbstractEventLoop  # set by serve()
        self.started = False
        self._stop: asyncio.Event | None = None
        self._reaper: asyncio.TimerHandle | None = None

    def should_stop(self) -> None:
        """Stop gracefully; asked a second time (a second Ctrl-C), cut what is in flight."""
        if self._stop is None:
            return
        if self._stop.is_set():
            for c in list(self.connections):
                c.close()
        self._stop.set()

    async def serve(self, ready: asyncio.Event | None = None) -> int:
        """Run until SIGTERM/SIGINT (or `should_stop`); the process's exit status."""
        self.loop = asyncio.get_running_loop()
        self.now = self.loop.time()
        self._stop = asyncio.Event()
        failed = await self.app.startup()
        if failed is not None:
            return 1
        listeners: list[asyncio.Server] = []
        for app, host, port in ((self.app, self.host, self.port), *self.extra):
            try:
                listeners.append(
                    await self.loop.create_server(
                        lambda app=app: Connection(self, app),  # type: ignore[misc]
                        host,
                        port,
                        backlog=2048,
                        reuse_address=True,
                        reuse_port=self.worker is not None,
                    )
                )
            except OSError as e:
                log.error("cannot listen on %s:%s: %s", host, port, e.strerror or e)
                for other in listeners:
                    other.close()
                await self.app.shutdown()
                return 1
        self.started = True
        for sig in (signal.SIGTERM, signal.SIGINT):
            self.loop.add_signal_handler(sig, self.should_stop)
        self.now = self.loop.time()
        self._reaper = self.loop.call_later(TICK, self._reap)
        shown = f"[{self.host}]" if ":" in self.host else self.host
        log.info("listening on http://%s:%d", shown, self.port)
        for _, host, port in self.extra:
            log.info("also listening on http://%s:%d", f"[{host}]" if ":" in host else host, port)
        if ready is not None:
            ready.set()
        try:
            await self._stop.wait()
            await self._shut(listeners)  # still listening for a second signal meanwhile
        finally:
            for sig in (signal.SIGTERM, signal.SIGINT):
                self.loop.remove_signal_handler(sig)
        return 0

    async def _shut(self, listeners: list[asyncio.Server]) -> None:
        log.info("stopping: finishing requests in flight (up to %gs)", self.graceful)
        for listener in listeners:
            listener.close()
        if self._reaper is not None:
            self._reaper.cancel()
        for c in list(self.connections):
            c.stop()
        deadline = self.loop.time() + self.graceful
        while self.connections and self.loop.time() < deadline:  # noqa: ASYNC110 (a poll, bounded)
            await asyncio.sleep(0.05)
        cut = [c for c in list(self.connections) if c.cut()]
        if cut:
            # Each ends with its dialect's error and closes; a client that does not read
            # its last bytes is not waited for long.
            log.warning("shutdown grace (%gs) over: cutting %d requests", self.graceful, len(cut))
            deadline = self.loop.time() + CUT_WAIT
            while (  # noqa: ASYNC110 (a poll, bounded)
                any(c.current is not None and not c.closed for c in cut)
                and self.loop.time() < deadline
            ):
                await asyncio.sleep(0.02)
        for c in list(self.connections):  # still there: closed (their tasks are cancelled)
            c.close()
        await asyncio.sleep(0)
        try:
            await self.app.shutdown()
        finally:
            log.info("stopped")

    def _reap(self) -> None:
        """Once a tick: close keep-alive connections idle for longer than `keepalive`,
        readers stalled for longer than `write_timeout`, and act on passed deadlines."""
        now = self.now = self.loop.time()
        keepalive, stall = self.keepalive, self.write_timeout
        for c in list(self.connections):
            if c.paused and now - c.paused_at > stall:
                log.info(
                    "%s: closed: it read none of its answer for %gs (server.write_timeout)",
                    c.client or "a client",
                    stall,
                )
                c.abort()
            elif c.deadline and now > c.deadline and not c.reading_paused:
                c.expire()
            elif (
                c.current is None
                and c.reading is None
                and not c.queue
                and now - c.idle_since > keepalive
            ):
                c.close()
        if self.refused:
            log.warning(
                "%d connections past server.max_connections (%d) answered 503",
                self.refused,
                self.max_connections,
            )
            self.refused = 0
        self._reaper = self.loop.call_later(TICK, self._reap)
