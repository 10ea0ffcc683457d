"""The bytes of HTTP/1.1 that the server (http/server.py) writes and reads itself: status
lines and heads, request targets, and the errors of the answers it makes before any route
runs (400, 408, 413, 431, 500, 503)."""

from __future__ import annotations

from http import HTTPStatus
from urllib.parse import unquote

import httptools

from aistack.core.errors import ErrorKind
from aistack.http.asgi import Headers

_STATUS: dict[int, bytes] = {
    s.value: f"HTTP/1.1 {s.value} {s.phrase}\r\n".encode() for s in HTTPStatus
}


def _status_line(status: int) -> bytes:
    line = _STATUS.get(status)
    return line if line is not None else f"HTTP/1.1 {status} \r\n".encode()


# With several workers, every answer says which one it came from (`x-aistack-worker`).
WORKER: list[bytes] = []


def head_lines(status: int, headers: Headers, close: bool) -> list[bytes]:
    parts = [_status_line(status), *WORKER]
    for k, v in headers:
        parts += (k, b": ", v, b"\r\n")
    if close:
        parts.append(b"connection: close\r\n")
    parts.append(b"\r\n")
    return parts


class HeadTooLarge(Exception):
    pass


def split_target(url: bytes) -> tuple[str, bytes]:
    """A request target's path (percent-decoded) and raw query."""
    if url[:1] != b"/":  # absolute form (a proxy's) or '*'
        try:
            parsed = httptools.parse_url(url)
            url = (parsed.path or b"/") + (b"?" + parsed.query if parsed.query else b"")
        except httptools.HttpParserInvalidURLError:
            url = b"/"
    raw, _, query = url.partition(b"?")
    path = raw.decode("latin-1")
    if "%" in path:
        path = unquote(path)
    return path, query


RAW_KINDS = {
    400: ErrorKind.INVALID_REQUEST,
    408: ErrorKind.REQUEST_TIMEOUT,
    413: ErrorKind.PAYLOAD_TOO_LARGE,
    431: ErrorKind.HEADERS_TOO_LARGE,
    500: ErrorKind.INTERNAL,
    503: ErrorKind.OVERLOADED,
}
RAW_WHY = {503: "the gateway is at its connection limit (server.max_connections); retry shortly"}
RAW_RETRY = {503: 1}
