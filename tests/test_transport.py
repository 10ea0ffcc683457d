"""The data-path HTTP client against small local servers playing each case."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Iterator

import pytest

from aistack.backends.transport import (
    ConnectError,
    FirstByteTimeout,
    HttpClient,
    IdleTimeout,
    RemoteProtocolError,
    Timeouts,
    TotalTimeout,
    parse_url,
)
from tests import faults
from tests.procs import free_port

Reader = asyncio.StreamReader
Writer = asyncio.StreamWriter


@pytest.fixture
def serve() -> Iterator[Callable[[faults.Handler], faults.FaultServer]]:
    servers: list[faults.FaultServer] = []

    def start(h: faults.Handler) -> faults.FaultServer:
        s = faults.FaultServer(h).start()
        servers.append(s)
        return s

    yield start
    for s in servers:
        s.stop()


def run(coro: Callable[[HttpClient], Awaitable[object]]) -> object:
    async def main() -> object:
        client = HttpClient()
        try:
            return await coro(client)
        finally:
            await client.aclose()

    return asyncio.run(main())


def body_of(payload: bytes) -> faults.Handler:
    async def h(r: Reader, w: Writer, req: bytes) -> None:
        w.write(faults.response_head(200, b"application/json", length=len(payload)) + payload)
        await w.drain()

    return h


def chunked(parts: list[bytes], ctype: bytes = b"text/plain", delay: float = 0) -> faults.Handler:
    async def h(r: Reader, w: Writer, req: bytes) -> None:
        w.write(faults.response_head(200, ctype))
        for p in parts:
            w.write(faults.chunk(p))
            await w.drain()
            if delay:
                await asyncio.sleep(delay)
        w.write(b"0\r\n\r\n")
        await w.drain()

    return h


def test_content_length_body_and_keep_alive_reuse(serve) -> None:  # type: ignore[no-untyped-def]
    s = serve(body_of(b'{"ok":true}'))
    ep = parse_url(s.url)

    async def go(c: HttpClient) -> list[bytes]:
        out = []
        for _ in range(3):
            r = await c.request("POST", ep, "/x", body=b"{}")
            out.append(await r.read())
        return out

    assert run(go) == [b'{"ok":true}'] * 3
    assert len(s.requests) == 3 and s.connections == 1 and s.disconnects == 0


def test_chunked_lines_split_anywhere(serve) -> None:  # type: ignore[no-untyped-def]
    parts = [b'{"a":1}\n{"b"', b":2}\n\n", b'{"c":3}']
    s = serve(chunked(parts))

    async def go(c: HttpClient) -> list[bytes]:
        r = await c.request("GET", parse_url(s.url), "/")
        return [line async for line in r.iter_lines()]

    assert run(go) == [b'{"a":1}', b'{"b":2}', b'{"c":3}']


def test_sse_events_with_crlf_comments_and_split_frames(serve) -> None:  # type: ignore[no-untyped-def]
    parts = [
        b": OPENROUTER PROCESSING\r\n\r\n",
        b'data: {"a":1}\r',
        b"\n\r\nevent: ping\ndata: x\ndata: y\n\n",
        b"data: [DONE]\n\n",
    ]
    s = serve(chunked(parts, b"text/event-stream"))

    async def go(c: HttpClient) -> list[tuple[str, bytes]]:
        r = await c.request("GET", parse_url(s.url), "/")
        return [ev async for ev in r.iter_sse()]

    assert run(go) == [("message", b'{"a":1}'), ("ping", b"x\ny"), ("message", b"[DONE]")]


def test_body_delimited_by_close(serve) -> None:  # type: ignore[no-untyped-def]
    async def h(r: Reader, w: Writer, req: bytes) -> None:
        w.write(
            b"HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\nconnection: close\r\n\r\nall of it"
        )
        await w.drain()
        w.close()

    s = serve(h)

    async def go(c: HttpClient) -> bytes:
        r = await c.request("GET", parse_url(s.url), "/")
        return await r.read()

    assert run(go) == b"all of it"


def test_refused_connection_is_a_connect_error() -> None:
    ep = parse_url(f"http://127.0.0.1:{free_port()}")

    async def go(c: HttpClient) -> None:
        await c.request("GET", ep, "/")

    with pytest.raises(ConnectError):
        run(go)


@pytest.mark.parametrize(
    ("timeouts", "exc"),
    [
        (Timeouts(first_byte=0.2), FirstByteTimeout),
        (Timeouts(total=0.2), TotalTimeout),
    ],
)
def test_silence_before_headers_times_out(serve, timeouts: Timeouts, exc: type) -> None:  # type: ignore[no-untyped-def]
    s = serve(faults.silent)

    async def go(c: HttpClient) -> None:
        await c.request("GET", parse_url(s.url), "/", timeouts=timeouts)

    with pytest.raises(exc):
        run(go)


def test_a_stalled_body_times_out_idle(serve) -> None:  # type: ignore[no-untyped-def]
    s = serve(chunked([b"first", b"second"], delay=1.0))

    async def go(c: HttpClient) -> list[bytes]:
        got: list[bytes] = []
        r = await c.request("GET", parse_url(s.url), "/", timeouts=Timeouts(idle=0.3))
        async for part in r.iter_bytes():
            got.append(part)
        return got

    with pytest.raises(IdleTimeout):
        run(go)


def test_a_cut_stream_is_an_error_not_an_end(serve) -> None:  # type: ignore[no-untyped-def]
    s = serve(faults.ollama_cut_stream(lines=2))

    async def go(c: HttpClient) -> list[bytes]:
        got: list[bytes] = []
        r = await c.request("POST", parse_url(s.url), "/api/chat", body=b"{}")
        async for line in r.iter_lines():
            got.append(line)
        return got

    with pytest.raises(RemoteProtocolError):
        run(go)


def test_an_idle_connection_closed_by_the_server_is_retried(serve) -> None:  # type: ignore[no-untyped-def]
    async def h(r: Reader, w: Writer, req: bytes) -> None:
        w.write(faults.response_head(200, b"text/plain", length=2) + b"ok")
        await w.drain()
        w.close()  # keep-alive was implied; the server closes anyway

    s = serve(h)
    ep = parse_url(s.url)

    async def go(c: HttpClient) -> list[bytes]:
        out = []
        for _ in range(3):
            r = await c.request("GET", ep, "/")
            out.append(await r.read())
            await asyncio.sleep(0.05)
        return out

    assert run(go) == [b"ok"] * 3
    assert s.connections == 3


def test_cancelling_a_stream_closes_the_connection(serve) -> None:  # type: ignore[no-untyped-def]
    s = serve(chunked([b"x"] * 50, delay=0.05))

    async def go(c: HttpClient) -> None:
        r = await c.request("GET", parse_url(s.url), "/")

        async def consume() -> None:
            async for _ in r.iter_bytes():
                pass

        task = asyncio.create_task(consume())
        await asyncio.sleep(0.2)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        await asyncio.sleep(0.3)

    run(go)
    assert s.disconnects == 1


def test_a_large_body_flows_through_backpressure(serve) -> None:  # type: ignore[no-untyped-def]
    payload = b"y" * (5 * 1024 * 1024)
    s = serve(body_of(payload))

    async def go(c: HttpClient) -> int:
        r = await c.request("GET", parse_url(s.url), "/")
        total = 0
        async for part in r.iter_bytes():
            total += len(part)
            await asyncio.sleep(0)
        return total

    assert run(go) == len(payload)


def test_urls_keep_their_path_prefix() -> None:
    ep = parse_url("https://openrouter.ai/api/v1/")
    assert (ep.scheme, ep.host, ep.port, ep.path) == ("https", "openrouter.ai", 443, "/api/v1")
    assert ep.host_header == b"openrouter.ai"
    assert parse_url("http://h:11435").host_header == b"h:11435"
