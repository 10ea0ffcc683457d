"""A small WebSocket client (RFC 6455): what ComfyUI's progress feed needs, nothing more.

ComfyUI reports a prompt's progress only on its WebSocket (`/ws?clientId=...`). The
gateway reads that feed per ComfyUI backend, off the text data path, so a dependency
for it would buy little: this opens the connection (the upgrade handshake), reads
text and binary messages (fragmented or not), answers pings, and closes. It never
sends data frames, so it has no use for extensions or subprotocols.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import os
import ssl
import struct

from aistack.backends.transport import ConnectError, Endpoint, RemoteProtocolError

_GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
_TEXT, _BINARY, _CLOSE, _PING, _PONG = 0x1, 0x2, 0x8, 0x9, 0xA
# A ComfyUI preview frame is a JPEG of a few hundred KB at most; refuse monsters.
MAX_MESSAGE = 64 << 20


class Closed(RemoteProtocolError):
    """The server closed the connection (a close frame or end of stream)."""


def accept_for(key: bytes) -> bytes:
    """The Sec-WebSocket-Accept a server must answer to this Sec-WebSocket-Key."""
    return base64.b64encode(hashlib.sha1(key + _GUID, usedforsecurity=False).digest())


def frame(opcode: int, payload: bytes = b"") -> bytes:
    """One final client frame (masked, as a client's must be)."""
    mask = os.urandom(4)
    n = len(payload)
    if n < 126:
        head = struct.pack(">BB", 0x80 | opcode, 0x80 | n)
    elif n < 1 << 16:
        head = struct.pack(">BBH", 0x80 | opcode, 0x80 | 126, n)
    else:
        head = struct.pack(">BBQ", 0x80 | opcode, 0x80 | 127, n)
    return head + mask + _xor(payload, mask)


def _xor(data: bytes, mask: bytes) -> bytes:
    n = len(data)
    if not n:
        return b""
    key = (mask * (n // 4 + 1))[:n]
    return (int.from_bytes(data, "big") ^ int.from_bytes(key, "big")).to_bytes(n, "big")


class WebSocket:
    """One client connection; `recv` returns (is_text, payload) per message."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._reader = reader
        self._writer = writer
        self.closed = False

    @classmethod
    async def connect(
        cls,
        ep: Endpoint,
        path: str,
        headers: list[tuple[bytes, bytes]] | None = None,
        within: float = 10.0,
    ) -> WebSocket:
        """Open `ws(s)://` on the endpoint's host; raises ConnectError or RemoteProtocolError."""
        ctx = ssl.create_default_context() if ep.scheme == "https" else None
        try:
            async with asyncio.timeout(within):
                reader, writer = await asyncio.open_connection(
                    ep.host, ep.port, ssl=ctx, server_hostname=ep.host if ctx else None
                )
        except (OSError, TimeoutError) as e:
            raise ConnectError(f"cannot connect to {ep.host}:{ep.port}: {e or 'timeout'}") from None
        key = base64.b64encode(os.urandom(16))
        lines = [
            f"GET {ep.path}{path} HTTP/1.1".encode(),
            b"host: " + ep.host_header,
            b"upgrade: websocket",
            b"connection: Upgrade",
            b"sec-websocket-key: " + key,
            b"sec-websocket-version: 13",
        ]
        lines += [k + b": " + v for k, v in headers or ()]
        writer.write(b"\r\n".join(lines) + b"\r\n\r\n")
        try:
            async with asyncio.timeout(within):
                head = await reader.readuntil(b"\r\n\r\n")
        except (OSError, TimeoutError, asyncio.IncompleteReadError, asyncio.LimitOverrunError):
            writer.close()
            raise RemoteProtocolError("the WebSocket handshake got no answer") from None
        status, *fields = head.decode("latin-1").split("\r\n")
        got = {k.strip().lower(): v.strip() for k, _, v in (f.partition(":") for f in fields) if k}
        if status.split(" ")[1:2] != ["101"] or got.get("sec-websocket-accept") != (
            accept_for(key).decode()
        ):
            writer.close()
            raise RemoteProtocolError(f"the WebSocket upgrade was refused: {status.strip()}")
        return cls(reader, writer)

    async def recv(self) -> tuple[bool, bytes]:
        """The next message; pings are answered on the way. Raises Closed at the end."""
        parts: list[bytes] = []
        size = 0
        text = False
        try:
            while True:
                b1, b2 = await self._reader.readexactly(2)
                op, n = b1 & 0x0F, b2 & 0x7F
                if n == 126:
                    (n,) = struct.unpack(">H", await self._reader.readexactly(2))
                elif n == 127:
                    (n,) = struct.unpack(">Q", await self._reader.readexactly(8))
                size += n
                if size > MAX_MESSAGE:
                    raise RemoteProtocolError(f"a WebSocket message over {MAX_MESSAGE} bytes")
                mask = await self._reader.readexactly(4) if b2 & 0x80 else b""
                data = await self._reader.readexactly(n) if n else b""
                if mask:  # servers do not mask, but a masked frame is still readable
                    data = _xor(data, mask)
                if op == _PING:
                    self._writer.write(frame(_PONG, data))
                    size -= n
                    continue
                if op == _PONG:
                    size -= n
                    continue
                if op == _CLOSE:
                    self._send_close()
                    raise Closed("the server closed the WebSocket")
                if op in (_TEXT, _BINARY):
                    text = op == _TEXT
                parts.append(data)
                if b1 & 0x80:
                    return text, b"".join(parts)
        except (asyncio.IncompleteReadError, ConnectionError, OSError):
            self.closed = True
            raise Closed("the WebSocket connection ended") from None

    def _send_close(self) -> None:
        if not self.closed:
            self.closed = True
            with contextlib.suppress(Exception):
                self._writer.write(frame(_CLOSE, struct.pack(">H", 1000)))

    def abort(self) -> None:
        """Drop the connection now (a reader waiting in `recv` gets Closed)."""
        self.closed = True
        self._writer.transport.abort()

    async def close(self) -> None:
        self._send_close()
        self._writer.close()
        with contextlib.suppress(Exception):
            async with asyncio.timeout(2):
                await self._writer.wait_closed()
