"""aistack's own HTTP/1.1 server (aistack.http.server), spoken to over raw sockets.

The official clients cover the common path in every other test; here are the parts of
HTTP/1.1 they rarely exercise, byte by byte: keep-alive and its idle timeout, pipelining,
chunked request bodies, `Expect: 100-continue`, HEAD, refusals (413, 400, 431) that
arrive whole before the connection closes, percent-encoded paths, and a graceful stop.
"""

from __future__ import annotations

import json
import signal
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.faults import chunk
from tests.procs import Proc, running, start_gateway

LIMIT = 4096


@pytest.fixture(scope="module")
def gw(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Proc]:
    cfg = {"server": {"keepalive_timeout": 1, "max_body_bytes": LIMIT}, "backends": []}
    with running(start_gateway(tmp_path_factory.mktemp("server"), cfg)) as p:
        yield p


def connect(gw: Proc) -> socket.socket:
    host, port = gw.url.removeprefix("http://").split(":")
    s = socket.create_connection((host, int(port)), timeout=10)
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return s


class Reader:
    """Reads HTTP/1.1 answers off a socket, one at a time."""

    def __init__(self, s: socket.socket) -> None:
        self.s = s
        self.buf = b""

    def _fill(self) -> bool:
        data = self.s.recv(65536)
        self.buf += data
        return bool(data)

    def _line(self) -> bytes:
        while b"\r\n" not in self.buf:
            if not self._fill():
                raise EOFError(self.buf)
        line, _, self.buf = self.buf.partition(b"\r\n")
        return line

    def _exactly(self, n: int) -> bytes:
        while len(self.buf) < n:
            if not self._fill():
                raise EOFError(self.buf)
        out, self.buf = self.buf[:n], self.buf[n:]
        return out

    def answer(self, head_only: bool = False) -> tuple[int, dict[str, str], bytes]:
        status = int(self._line().split(b" ", 2)[1])
        headers: dict[str, str] = {}
        while line := self._line():
            k, _, v = line.decode("latin-1").partition(":")
            headers[k.strip().lower()] = v.strip()
        if head_only or status in (100, 204, 304):
            return status, headers, b""
        if headers.get("transfer-encoding") == "chunked":
            body = b""
            while size := int(self._line(), 16):
                body += self._exactly(size)
                self._line()
            self._line()
            return status, headers, body
        return status, headers, self._exactly(int(headers["content-length"]))

    def closed(self) -> bool:
        """Whether the server closed the connection (and sent nothing more)."""
        self.s.settimeout(5)
        try:
            return not self.buf and not self._fill()
        except ConnectionResetError:
            return True


def get(path: str, extra: str = "") -> bytes:
    return f"GET {path} HTTP/1.1\r\nHost: localhost\r\n{extra}\r\n".encode()


def post(path: str, body: bytes, extra: str = "") -> bytes:
    head = f"POST {path} HTTP/1.1\r\nHost: localhost\r\nContent-Length: {len(body)}\r\n{extra}\r\n"
    return head.encode() + body


SHOW = json.dumps({"model": "nope:1b"}).encode()
CHUNKED_HEAD = b"POST /api/show HTTP/1.1\r\nHost: localhost\r\nTransfer-Encoding: chunked\r\n\r\n"


def test_keep_alive_answers_many_requests_on_one_connection(gw: Proc) -> None:
    with connect(gw) as s:
        r = Reader(s)
        for _ in range(3):
            s.sendall(get("/api/version"))
            status, headers, body = r.answer()
            assert status == 200 and "version" in json.loads(body)
            assert "connection" not in headers


def test_connection_close_is_honoured_after_the_answer(gw: Proc) -> None:
    with connect(gw) as s:
        r = Reader(s)
        s.sendall(get("/api/version", "Connection: close\r\n"))
        status, headers, _ = r.answer()
        assert status == 200 and headers["connection"] == "close"
        assert r.closed()


def test_http_1_0_closes_unless_asked_to_keep_alive(gw: Proc) -> None:
    with connect(gw) as s:
        r = Reader(s)
        s.sendall(b"GET /api/version HTTP/1.0\r\n\r\n")
        assert r.answer()[0] == 200
        assert r.closed()


def test_pipelined_requests_are_answered_in_order(gw: Proc) -> None:
    with connect(gw) as s:
        r = Reader(s)
        # Three requests in one write: an error, a version, and a 404 path.
        s.sendall(post("/api/show", SHOW) + get("/api/version") + get("/nowhere"))
        first, second, third = r.answer(), r.answer(), r.answer()
        assert first[0] == 404 and "nope:1b" in json.loads(first[2])["error"]
        assert second[0] == 200 and "version" in json.loads(second[2])
        assert third[0] == 404 and third[2] == b"404 page not found"


def test_a_chunked_request_body_is_read_whole(gw: Proc) -> None:
    half = len(SHOW) // 2
    chunks = [SHOW[:half], SHOW[half:]]
    body = b"".join(chunk(c) for c in chunks) + chunk(b"")
    with connect(gw) as s:
        r = Reader(s)
        s.sendall(CHUNKED_HEAD)
        time.sleep(0.05)  # the body arrives in a later packet than the head
        s.sendall(body)
        status, _, answer = r.answer()
        assert status == 404 and "nope:1b" in json.loads(answer)["error"]


def test_expect_100_continue_is_answered_before_the_body(gw: Proc) -> None:
    with connect(gw) as s:
        r = Reader(s)
        s.sendall(post("/api/show", SHOW, "Expect: 100-continue\r\n")[: -len(SHOW)])
        assert r.answer()[0] == 100
        s.sendall(SHOW)
        status, _, answer = r.answer()
        assert status == 404 and "nope:1b" in json.loads(answer)["error"]


def test_head_has_the_headers_and_no_body(gw: Proc) -> None:
    with connect(gw) as s:
        r = Reader(s)
        s.sendall(b"HEAD /api/version HTTP/1.1\r\nHost: localhost\r\n\r\n" + get("/api/version"))
        status, headers, _ = r.answer(head_only=True)
        assert status == 200 and int(headers["content-length"]) > 0
        # Nothing of the HEAD's body is on the wire: the next answer follows at once.
        assert r.answer()[0] == 200


def test_percent_encoded_paths_are_decoded(gw: Proc) -> None:
    with connect(gw) as s:
        r = Reader(s)
        s.sendall(get("/api/%76ersion"))
        assert r.answer()[0] == 200


def test_a_path_is_matched_whatever_its_query_string(gw: Proc) -> None:
    with connect(gw) as s:
        r = Reader(s)
        s.sendall(post("/v1/chat/completions?beta=true", b"{}") + get("/api/version?x=1&y"))
        status, _, answer = r.answer()
        assert status == 400 and "model" in json.loads(answer)["error"]["message"]
        assert r.answer()[0] == 200


@pytest.mark.parametrize(
    ("path", "dialect"), [("/api/chat", "ollama"), ("/v1/chat/completions", "openai")]
)
def test_a_declared_body_over_the_limit_is_refused_whole_before_closing(
    gw: Proc, path: str, dialect: str
) -> None:
    body = b"x" * (LIMIT * 4)
    with connect(gw) as s:
        r = Reader(s)
        s.sendall(post(path, body)[: -len(body)])  # the head only
        status, headers, answer = r.answer()  # before any of the body was sent
        assert status == 413 and headers["connection"] == "close"
        error = json.loads(answer)["error"]
        assert "too large" in (error if dialect == "ollama" else error["message"])
        s.sendall(body)  # the server reads and drops it, then closes: no reset
        assert r.closed()


def test_a_chunked_body_over_the_limit_is_refused(gw: Proc) -> None:
    part = b"x" * 1000
    body = chunk(part) * 8 + chunk(b"")
    with connect(gw) as s:
        r = Reader(s)
        s.sendall(
            b"POST /api/chat HTTP/1.1\r\nHost: localhost\r\nTransfer-Encoding: chunked\r\n\r\n"
            + body
        )
        status, _, answer = r.answer()
        assert status == 413 and "too large" in json.loads(answer)["error"]


@pytest.mark.parametrize(
    ("raw", "status"),
    [
        (b"NOT HTTP AT ALL\r\n\r\n", 400),
        (b"GET / HTTP/1.1\r\nContent-Length: nope\r\n\r\n", 400),
        (b"GET / HTTP/1.1\r\nX-Big: " + b"a" * (70 * 1024) + b"\r\n\r\n", 431),
    ],
    ids=["garbage", "bad-content-length", "huge-headers"],
)
def test_unparseable_requests_get_a_status_and_a_close(gw: Proc, raw: bytes, status: int) -> None:
    with connect(gw) as s:
        r = Reader(s)
        s.sendall(raw)
        got, headers, _ = r.answer()
        assert got == status and headers["connection"] == "close"
        assert r.closed()
    with connect(gw) as s:  # and the server goes on serving
        s.sendall(get("/api/version"))
        assert Reader(s).answer()[0] == 200


def test_idle_keep_alive_connections_are_closed_after_the_timeout(gw: Proc) -> None:
    with connect(gw) as s:
        r = Reader(s)
        s.sendall(get("/api/version"))
        assert r.answer()[0] == 200
        started = time.monotonic()
        assert r.closed()  # keepalive_timeout: 1 (the sweep runs every second)
        assert time.monotonic() - started < 4


def test_a_stop_lets_the_request_in_flight_finish(tmp_path: Path) -> None:
    """SIGTERM while a request's body is still arriving: the request is answered whole,
    then the process exits 0; idle connections are closed at once."""
    cfg = {"server": {"max_body_bytes": LIMIT}, "backends": []}
    gw = start_gateway(tmp_path, cfg)
    try:
        with connect(gw) as busy, connect(gw) as idle:
            idle.sendall(get("/api/version"))
            assert Reader(idle).answer()[0] == 200
            busy.sendall(post("/api/show", SHOW)[: -len(SHOW)])  # the head, no body yet
            time.sleep(0.2)
            gw.proc.send_signal(signal.SIGTERM)
            assert Reader(idle).closed()
            busy.sendall(SHOW)
            r = Reader(busy)
            status, headers, _ = r.answer()
            assert status == 404 and headers["connection"] == "close"
            assert r.closed()
        assert gw.proc.wait(15) == 0
    finally:
        gw.stop()


def test_a_head_trickled_in_small_packets_is_still_bounded(gw: Proc) -> None:
    with connect(gw) as s:
        r = Reader(s)
        s.sendall(b"GET / HTTP/1.1\r\nX-Big: ")
        try:
            for _ in range(40):  # 80 KB in all, never a whole header line
                s.sendall(b"a" * 2048)
                time.sleep(0.005)
        except (BrokenPipeError, ConnectionResetError):
            pass  # refused and closed before the client finished
        got, headers, _ = r.answer()
        assert got == 431 and headers["connection"] == "close"


def test_a_stream_to_an_http_1_0_client_is_plain_and_ends_with_the_connection(
    gw_url: str,
) -> None:
    """HTTP/1.0 has no chunked encoding: the lines come as they are, then the close."""
    body = json.dumps(
        {"model": "smollm2:135m", "prompt": "Hi", "options": {"num_predict": 3}}
    ).encode()
    host, port = gw_url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=30) as s:
        s.sendall(
            b"POST /api/generate HTTP/1.0\r\nContent-Length: %d\r\n\r\n%b" % (len(body), body)
        )
        raw = b""
        while data := s.recv(65536):
            raw += data
    head, _, rest = raw.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200") and b"transfer-encoding" not in head.lower()
    lines = [json.loads(line) for line in rest.splitlines() if line]
    assert lines[-1]["done"] is True and len(lines) >= 2


def test_a_malformed_chunked_body_gets_a_400_in_the_dialect_and_a_close(gw: Proc) -> None:
    with connect(gw) as s:
        r = Reader(s)
        s.sendall(CHUNKED_HEAD + b"5\r\nhello\r\nZZZ\r\n")  # not a chunk size
        status, headers, answer = r.answer()
        assert status == 400 and headers["connection"] == "close"
        assert "malformed HTTP request" in json.loads(answer)["error"]
        assert r.closed()


def test_a_second_stop_signal_cuts_what_is_in_flight(tmp_path: Path) -> None:
    """The first SIGINT waits for requests in flight; a second one (Ctrl-C again) does not."""
    gw = start_gateway(tmp_path, {"backends": []})
    try:
        with connect(gw) as busy:
            busy.sendall(post("/api/show", SHOW)[: -len(SHOW)])  # the head; the body never comes
            time.sleep(0.2)
            gw.proc.send_signal(signal.SIGINT)
            time.sleep(0.5)
            assert gw.proc.poll() is None  # still waiting for that request
            gw.proc.send_signal(signal.SIGINT)
            assert Reader(busy).closed()  # cut, without an answer
        assert gw.proc.wait(15) == 0
    finally:
        gw.stop()
