"""A small raw-socket HTTP/1.1 client for streaming measurements (asyncio, uvloop when present).

One `Conn` is one keep-alive TCP connection running one request at a time. It decodes chunked,
content-length and close-delimited bodies, splits the body into frames (SSE events separated by
a blank line, or NDJSON lines) and timestamps each frame as the bytes that complete it arrive.
Time to first token (TTFT) is request write -> the first frame carrying a token, and the gaps are
the times between consecutive token frames, so a gateway that merges the role chunk into the
first token, or the finish chunk into the usage chunk, is timed on the same tokens as the mock.
No HTTP library sits in between, so what is measured is the server.
"""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field, replace
from typing import Any, TypeVar, cast

T = TypeVar("T")

# A frame that carries a token: non-empty text in an OpenAI delta or an Ollama chat/generate
# line, an Anthropic text_delta, or a Responses output_text.delta (whose later events repeat
# the whole text, and so are not counted).
TOKEN = re.compile(
    rb'"(?:content|response|reasoning_content|thinking)"\s*:\s*"[^"]'
    rb'|"text_delta"\s*,\s*"text"\s*:\s*"[^"]'
    rb'|"response\.output_text\.delta".*"delta"\s*:\s*"[^"]'
)
# The end of an SSE stream: OpenAI chat's [DONE], Anthropic's message_stop, Responses'
# response.completed.
SSE_DONE = re.compile(rb'\[DONE\]|"type"\s*:\s*"(?:message_stop|response\.completed)"')

SSE = "sse"
NDJSON = "ndjson"
JSON = "json"  # one frame: the whole body


@dataclass(frozen=True)
class Target:
    """Where one arm answers one kind of request."""

    port: int
    path: str
    body: bytes
    framing: str  # SSE, NDJSON or JSON
    auth: str = ""  # Authorization header value, if any
    host: str = "127.0.0.1"

    def request(self) -> bytes:
        accept = {SSE: "text/event-stream", NDJSON: "application/x-ndjson"}.get(
            self.framing, "application/json"
        )
        head = [
            f"POST {self.path} HTTP/1.1",
            f"Host: {self.host}:{self.port}",
            "User-Agent: aistack-bench",
            f"Accept: {accept}",
            "Content-Type: application/json",
            f"Content-Length: {len(self.body)}",
        ]
        if self.auth:
            head.append(f"Authorization: {self.auth}")
        return ("\r\n".join(head) + "\r\n\r\n").encode() + self.body


@dataclass
class Result:
    status: int = 0
    ttft: float = float("nan")  # seconds from writing the request to the first token frame
    gaps: list[float] = field(default_factory=list)  # seconds between consecutive token frames
    frames: int = 0  # data frames (SSE events with data, NDJSON lines)
    tokens: int = 0  # frames that carry a token
    done: bool = False  # the terminal frame ([DONE] / "done":true / the JSON body) arrived
    error: str = ""
    body: bytes = b""  # first KBs of the body, for smoke checks and error messages

    @property
    def ok(self) -> bool:
        return 200 <= self.status < 300 and self.done and not self.error


class _Protocol(asyncio.Protocol):
    KEEP_BODY = 4096

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.closed = asyncio.get_running_loop().create_future()
        self.reset(None, JSON)

    def reset(self, fut: asyncio.Future[Result] | None, framing: str) -> None:
        self.fut = fut
        self.framing = framing
        self.result = Result()
        self.buf = bytearray()  # raw bytes not yet parsed
        self.frame_buf = bytearray()  # decoded body bytes not yet split into frames
        self.in_headers = True
        self.chunked = False
        self.remaining = -1  # content-length left, or -1 when close-delimited
        self.chunk_left = 0
        self.chunk_state = "size"  # size | data | crlf | trailer
        self.t0 = 0.0
        self.last = 0.0  # when the last token frame arrived
        self.started = False  # at least one frame arrived
        self.first_frame: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    # asyncio callbacks ---------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's is not a subclass

    def connection_lost(self, exc: Exception | None) -> None:
        if self.fut is not None and not self.fut.done():
            if not self.in_headers and not self.chunked and self.remaining < 0:
                self._finish()  # close-delimited body ends here
            else:
                self.result.error = f"connection closed mid-response ({exc or 'EOF'})"
                self._finish()
        if not self.closed.done():
            self.closed.set_result(None)

    def data_received(self, data: bytes) -> None:
        now = time.perf_counter()
        self.buf += data
        try:
            self._parse(now)
        except ValueError as e:  # malformed response
            self.result.error = f"bad response: {e}"
            self._finish()
            if self.transport is not None:
                self.transport.close()

    # parsing --------------------------------------------------------------------------------

    def _parse(self, now: float) -> None:
        if self.fut is None or self.fut.done():
            self.buf.clear()
            return
        if self.in_headers:
            end = self.buf.find(b"\r\n\r\n")
            if end < 0:
                return
            head = bytes(self.buf[:end]).decode("latin-1").split("\r\n")
            del self.buf[: end + 4]
            self.in_headers = False
            self.result.status = int(head[0].split(" ", 2)[1])
            headers = {}
            for line in head[1:]:
                name, _, value = line.partition(":")
                headers[name.strip().lower()] = value.strip().lower()
            self.chunked = "chunked" in headers.get("transfer-encoding", "")
            if not self.chunked:
                self.remaining = int(headers.get("content-length", "-1"))
            if self.remaining == 0:
                self._body(b"", now)
                self._finish()
                return
        if self.chunked:
            self._parse_chunked(now)
        elif self.buf:
            take = len(self.buf) if self.remaining < 0 else min(self.remaining, len(self.buf))
            piece = bytes(self.buf[:take])
            del self.buf[:take]
            if self.remaining > 0:
                self.remaining -= take
            self._body(piece, now)
            if self.remaining == 0:
                self._finish()

    def _parse_chunked(self, now: float) -> None:
        while self.fut is not None and not self.fut.done():
            if self.chunk_state == "size":
                end = self.buf.find(b"\r\n")
                if end < 0:
                    return
                size = int(bytes(self.buf[:end]).split(b";")[0], 16)
                del self.buf[: end + 2]
                self.chunk_left = size
                self.chunk_state = "data" if size else "trailer"
            elif self.chunk_state == "data":
                if not self.buf:
                    return
                take = min(self.chunk_left, len(self.buf))
                piece = bytes(self.buf[:take])
                del self.buf[:take]
                self.chunk_left -= take
                self._body(piece, now)
                if self.chunk_left == 0:
                    self.chunk_state = "crlf"
            elif self.chunk_state == "crlf":
                if len(self.buf) < 2:
                    return
                del self.buf[:2]
                self.chunk_state = "size"
            else:  # trailer: header lines until an empty one
                end = self.buf.find(b"\r\n")
                if end < 0:
                    return
                line = bytes(self.buf[:end])
                del self.buf[: end + 2]
                if not line:
                    self._finish()
                    return

    def _body(self, piece: bytes, now: float) -> None:
        if len(self.result.body) < self.KEEP_BODY:
            self.result.body += piece[: self.KEEP_BODY - len(self.result.body)]
        if self.framing == JSON:
            return
        self.frame_buf += piece
        sep = b"\n\n" if self.framing == SSE else b"\n"
        if b"\r" in self.frame_buf:
            self.frame_buf[:] = self.frame_buf.replace(b"\r\n", b"\n")
        while True:
            end = self.frame_buf.find(sep)
            if end < 0:
                return
            frame = bytes(self.frame_buf[:end])
            del self.frame_buf[: end + len(sep)]
            self._frame(frame, now)

    def _frame(self, frame: bytes, now: float) -> None:
        if self.framing == SSE:
            if b"data:" not in frame:  # comments (": keep-alive"), event-only frames
                return
            if SSE_DONE.search(frame):
                self.result.done = True
        elif not frame.strip():
            return
        elif b'"done":true' in frame or b'"done": true' in frame:
            self.result.done = True
        self.result.frames += 1
        if not self.started:
            self.started = True
            if not self.first_frame.done():
                self.first_frame.set_result(None)
        if TOKEN.search(frame):
            if self.result.tokens:
                self.result.gaps.append(now - self.last)
            else:
                self.result.ttft = now - self.t0
            self.result.tokens += 1
            self.last = now

    def _finish(self) -> None:
        now = time.perf_counter()
        if self.framing == JSON and self.result.status:
            self.result.frames = 1
            self.result.done = True
            self.result.ttft = now - self.t0
        elif self.frame_buf.strip() and not self.result.error:
            self._frame(bytes(self.frame_buf), now)  # a last frame without its separator
            self.frame_buf.clear()
        if self.fut is not None and not self.fut.done():
            self.fut.set_result(self.result)
        if not self.first_frame.done():
            self.first_frame.set_result(None)


class Conn:
    """One keep-alive connection; `send` runs one request and returns its measurements."""

    def __init__(self, target: Target) -> None:
        self.target = target
        self.proto: _Protocol | None = None

    async def connect(self) -> None:
        loop = asyncio.get_running_loop()
        _, proto = await loop.create_connection(_Protocol, self.target.host, self.target.port)
        self.proto = proto

    async def send(self, target: Target | None = None, timeout: float = 30.0) -> Result:
        """Send one request (reconnecting if the server closed the connection) and wait for
        the whole answer."""
        if self.proto is None or self.proto.transport is None or self.proto.closed.done():
            try:
                await self.connect()
            except OSError as e:
                self.proto = None
                return Result(error=f"{type(e).__name__}: {e}")
        fut = self.start(target)
        try:
            return await asyncio.wait_for(fut, timeout)
        except TimeoutError:
            assert self.proto is not None
            self.proto.result.error = f"timed out after {timeout:.0f} s"
            self.close()
            return self.proto.result

    def start(self, target: Target | None = None) -> asyncio.Future[Result]:
        """Write a request on the open connection; the future resolves with the whole answer."""
        target = target or self.target
        proto = self.proto
        assert proto is not None and proto.transport is not None
        fut: asyncio.Future[Result] = asyncio.get_running_loop().create_future()
        proto.reset(fut, target.framing)
        proto.t0 = time.perf_counter()
        proto.transport.write(target.request())
        return fut

    @property
    def first_frame(self) -> asyncio.Future[None]:
        assert self.proto is not None
        return self.proto.first_frame

    def close(self) -> None:
        if self.proto is not None and self.proto.transport is not None:
            self.proto.transport.close()


async def fetch(target: Target, timeout: float = 10.0) -> Result:
    """One request on a fresh connection (smoke checks)."""
    conn = Conn(target)
    try:
        await conn.connect()
        return await conn.send(timeout=timeout)
    except OSError as e:
        return Result(error=f"{type(e).__name__}: {e}")
    finally:
        conn.close()


async def first_frame(target: Target, timeout: float = 10.0) -> Result:
    """Open a stream, wait for its first frame, hang up (smoke check for long streams)."""
    conn = Conn(target)
    try:
        await conn.connect()
        fut = conn.start()
        await asyncio.wait_for(asyncio.shield(conn.first_frame), timeout)
        assert conn.proto is not None
        result = conn.proto.result
        if fut.done() and result.error:
            return replace(result)
        return replace(result, done=result.frames > 0)  # a copy: closing marks the original
    except (OSError, TimeoutError) as e:
        return Result(error=f"{type(e).__name__}: {e}")
    finally:
        conn.close()


async def run_streams(
    target: Target, conns: int, per_conn: int, timeout: float, spread: float = 0.0
) -> list[Result]:
    """`conns` connections, each running `per_conn` streams back to back. Connection i starts
    i/conns of `spread` seconds late, so paced streams do not all deliver in the same instant
    (a burst of simultaneous frames would time the client's own queue, not the server)."""

    async def worker(i: int) -> list[Result]:
        await asyncio.sleep(spread * i / conns)
        conn = Conn(target)
        out = []
        try:
            for _ in range(per_conn):
                out.append(await conn.send(timeout=timeout))
        finally:
            conn.close()
        return out

    results = await asyncio.gather(*(worker(i) for i in range(conns)))
    return [r for rs in results for r in rs]


@dataclass
class Held:
    opened: int  # streams whose first frame arrived
    open_at_sample: int  # of those, still streaming when the sample was taken
    failed: int  # connect errors, non-2xx, or no first frame in time
    sample: int  # what the sampler returned (RSS in bytes)
    open_s: float  # how long opening them all took


async def hold_streams(
    target: Target,
    n: int,
    sampler: Callable[[], int],
    *,
    settle: float = 1.0,
    open_timeout: float = 30.0,
    connect_at_once: int = 100,
) -> Held:
    """Open `n` concurrent streams, sample (RSS) while they are all open, then drop them."""
    gate = asyncio.Semaphore(connect_at_once)
    conns = [Conn(target) for _ in range(n)]
    futs: list[asyncio.Future[Result] | None] = [None] * n
    t0 = time.perf_counter()

    async def open_one(i: int) -> bool:
        async with gate:  # bounds the connect stampede, not the streams
            try:
                await conns[i].connect()
            except OSError:
                return False
            futs[i] = conns[i].start()
        try:
            await asyncio.wait_for(asyncio.shield(conns[i].first_frame), open_timeout)
        except TimeoutError:
            return False
        proto = conns[i].proto
        return proto is not None and proto.started

    try:
        opened = sum(await asyncio.gather(*(open_one(i) for i in range(n))))
        open_s = time.perf_counter() - t0
        await asyncio.sleep(settle)
        still = sum(1 for f in futs if f is not None and not f.done())
        sample = sampler()
        failed = n - opened
        return Held(opened, still, failed, sample, open_s)
    finally:
        for conn in conns:
            conn.close()
        await asyncio.sleep(0.2)  # let the transports finish closing


def new_loop() -> asyncio.AbstractEventLoop:
    try:
        import uvloop
    except ImportError:
        return asyncio.new_event_loop()
    return uvloop.new_event_loop()  # type: ignore[no-any-return]


def run(coro: Coroutine[Any, Any, T]) -> T:
    """asyncio.run on uvloop when it is installed."""
    with asyncio.Runner(loop_factory=new_loop) as runner:
        return runner.run(coro)
