"""aistack's own HTTP/1.1 server (aistack.http.server), spoken to over raw sockets.

The official clients cover the common path in every other test; here are the parts of
HTTP/1.1 they rarely exercise, byte by byte: keep-alive and its idle timeout, pipelining,
chunked request bodies, `Expect: 100-continue`, HEAD, refusals (413, 400, 431) that
arrive whole before the connection closes, percent-encoded paths, and a graceful stop.
"""

from __future__ import annotations

import json
import selectors
import signal
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.faults import chunk
from tests.procs import Proc, free_port, running, start_gateway

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
        """Whether the server closed the connection (and sent nothing more), waiting
        generously for it."""
        self.s.settimeout(60)
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
        assert r.closed()  # keepalive_timeout: 1 (the sweep runs every second)


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


# -- slow and hostile clients (issue 14): deadlines, refused bodies, the connection cap,
# stalled readers, the head's size, repeated headers, and every raw answer's dialect.

DEADLINE = 3  # seconds: head_timeout and body_timeout of the strict gateway
PATHS = {  # a route of each dialect: (method, path), and whether it reads a body
    "ollama": ("POST", "/api/chat"),
    "openai": ("POST", "/v1/chat/completions"),
    "anthropic": ("POST", "/v1/messages"),
    "qdrant": ("PUT", "/qdrant/collections/c"),
}


@pytest.fixture(scope="module")
def strict(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Proc, Proc]]:
    """A gateway with short deadlines, and its vector store's own listener (as a Proc
    with that URL, for `connect`)."""
    vport = free_port()
    cfg = {
        "server": {
            "max_body_bytes": LIMIT,
            "head_timeout": DEADLINE,
            "body_timeout": DEADLINE,
            "write_timeout": 1,
            "max_connections": 2000,
        },
        "vectors": {"listen": f"127.0.0.1:{vport}"},
        "backends": [],
    }
    with running(start_gateway(tmp_path_factory.mktemp("strict"), cfg)) as p:
        yield p, Proc(p.proc, f"http://127.0.0.1:{vport}", p.log)


def message_in(dialect: str, body: bytes) -> str:
    """The message of an error body, checked to be in `dialect`'s shape."""
    doc = json.loads(body)
    if dialect == "ollama":
        assert set(doc) == {"error"} and isinstance(doc["error"], str), doc
        return str(doc["error"])
    if dialect == "openai":
        assert set(doc) == {"error"} and set(doc["error"]) == {"message", "type", "param", "code"}
        return str(doc["error"]["message"])
    if dialect == "anthropic":
        assert doc["type"] == "error" and set(doc["error"]) == {"type", "message"}, doc
        return str(doc["error"]["message"])
    assert dialect == "qdrant"
    assert set(doc) == {"status", "time"} and isinstance(doc["status"]["error"], str), doc
    return str(doc["status"]["error"])


def read_all(socks: list[socket.socket], timeout: float) -> list[bytes | None]:
    """Everything each socket receives until the server closes it; None where it was not
    closed within `timeout` (a reset counts as closed)."""
    sel = selectors.DefaultSelector()
    got: list[bytearray] = [bytearray() for _ in socks]
    done: list[bool] = [False] * len(socks)
    for i, s in enumerate(socks):
        s.setblocking(False)
        sel.register(s, selectors.EVENT_READ, i)
    deadline = time.monotonic() + timeout
    left = len(socks)
    while left and time.monotonic() < deadline:
        for key, _ in sel.select(timeout=1):
            i = key.data
            try:
                data = socks[i].recv(65536)
            except BlockingIOError:
                continue
            except ConnectionResetError:
                data = b""
            if data:
                got[i] += data
            else:
                done[i] = True
                left -= 1
                sel.unregister(socks[i])
    sel.close()
    return [bytes(g) if d else None for g, d in zip(got, done, strict=True)]


def parse(raw: bytes) -> tuple[int, dict[str, str], bytes]:
    head, _, body = raw.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = {k.strip().lower(): v.strip() for k, _, v in (h.partition(":") for h in lines[1:])}
    return int(lines[0].split(" ", 2)[1]), headers, body


def stalled(dialect: str, part: str) -> bytes:
    """A request of a route in `dialect` that stops before its `part` ends."""
    method, path = PATHS[dialect]
    if part == "head":
        return f"{method} {path} HTTP/1.1\r\nHost: localhost\r\nX-Slow: ".encode()
    return f"{method} {path} HTTP/1.1\r\nHost: localhost\r\nContent-Length: 100\r\n\r\n{{".encode()


STALLS: list[tuple[str, bytes, int | None, str]] = [
    *((f"{d}-head", stalled(d, "head"), 408, d) for d in PATHS),
    *((f"{d}-body", stalled(d, "body"), 408, d) for d in PATHS),
    ("chunked-no-end", CHUNKED_HEAD + chunk(b'{"model": '), 408, "ollama"),
    ("chunk-of-2^64-1", CHUNKED_HEAD + b"ffffffffffffffff\r\n{", 408, "ollama"),
    ("silent", b"", None, ""),  # connects and says nothing: closed without a word
]


def test_stalled_heads_and_bodies_are_closed_by_their_deadlines(
    strict: tuple[Proc, Proc],
) -> None:
    """500 connections that never finish their heads or bodies: a normal request is
    answered while they hang, and each is closed by its deadline with a 408 in the
    dialect of the route it named (a connection that sent nothing, without a word)."""
    gw, _ = strict
    socks, kinds = [], []
    try:
        for i in range(500):
            kind = STALLS[i % len(STALLS)]
            s = connect(gw)
            if kind[1]:
                s.sendall(kind[1])
            socks.append(s)
            kinds.append(kind)
        with connect(gw) as s:
            s.sendall(get("/api/version"))
            assert Reader(s).answer()[0] == 200
        got = read_all(socks, timeout=90)
    finally:
        for s in socks:
            s.close()
    for (name, _, status, dialect), raw in zip(kinds, got, strict=True):
        assert raw is not None, f"{name}: still open"
        if status is None:
            assert raw == b"", name
            continue
        code, headers, body = parse(raw)
        assert code == status and headers["connection"] == "close", (name, raw[:300])
        assert "did not arrive within" in message_in(dialect, body), name


@pytest.mark.parametrize(
    ("name", "data", "status"),
    [
        ("over-the-limit", b"ffffffffffffffff\r\n" + b"x" * (LIMIT + 1), 413),
        ("chunks-over-the-limit", chunk(b"x" * 1000) * 5, 413),
        ("bad-size", b"zz\r\n", 400),
    ],
)
def test_a_chunked_body_that_cannot_end_well_is_answered_at_once(
    gw: Proc, name: str, data: bytes, status: int
) -> None:
    """No terminator needed: past the limit is a 413 now, a bad size a 400 now."""
    with connect(gw) as s:
        r = Reader(s)
        s.sendall(CHUNKED_HEAD + data)
        got, headers, body = r.answer()
        assert got == status and headers["connection"] == "close"
        assert json.loads(body)["error"]


@pytest.mark.parametrize("dialect", list(PATHS))
@pytest.mark.parametrize(
    ("status", "raw"),
    [
        (400, "{method} {path} HTTP/1.1\r\nHost: localhost\r\nContent-Length: nope\r\n\r\n"),
        (431, "{method} {path} HTTP/1.1\r\nHost: localhost\r\nX-Big: " + "a" * 70_000 + "\r\n\r\n"),
        (408, "{method} {path} HTTP/1.1\r\nHost: localhost\r\nX-Slow: "),
        (413, "{method} {path} HTTP/1.1\r\nHost: localhost\r\nContent-Length: 99999\r\n\r\n"),
    ],
    ids=["400", "431", "408", "413"],
)
def test_raw_errors_answer_in_the_dialect_of_the_path(
    strict: tuple[Proc, Proc], dialect: str, status: int, raw: str
) -> None:
    gw, _ = strict
    method, path = PATHS[dialect]
    with connect(gw) as s:
        s.sendall(raw.format(method=method, path=path).encode())
        got, headers, body = Reader(s).answer()
        assert got == status and headers["content-type"].startswith("application/json")
        assert message_in(dialect, body)


@pytest.mark.parametrize(
    ("request_", "status", "dialect", "words"),
    [
        (get("/api/chat"), 405, "ollama", "405 method not allowed"),
        (get("/v1/chat/completions"), 405, "openai", "not allowed"),
        (get("/v1/messages"), 405, "anthropic", "not allowed"),
        (get("/v1"), 404, "openai", "Unknown request URL"),
        (get("/api/nowhere"), 404, "ollama", "404 page not found"),
        (get("/v1/messages/nowhere"), 404, "anthropic", "Unknown request URL"),
        (get("/qdrant/nowhere"), 404, "qdrant", "Unknown request URL"),
    ],
    ids=["ollama-405", "openai-405", "anthropic-405", "v1-404", "api-404", "messages-404",
         "qdrant-404"],
)  # fmt: skip
def test_wrong_methods_and_paths_answer_in_the_dialect(
    strict: tuple[Proc, Proc], request_: bytes, status: int, dialect: str, words: str
) -> None:
    gw, _ = strict
    with connect(gw) as s:
        s.sendall(request_)
        got, _, body = Reader(s).answer()
        assert got == status and words in message_in(dialect, body)


@pytest.mark.parametrize(
    ("raw", "status"),
    [
        (b"GET /nowhere HTTP/1.1\r\nHost: localhost\r\n\r\n", 404),
        (b"PUT /collections/c HTTP/1.1\r\nHost: localhost\r\nContent-Length: nope\r\n\r\n", 400),
        (b"GET /collections HTTP/1.1\r\nHost: localhost\r\nX-Slow: ", 408),
    ],
    ids=["404", "400", "408"],
)
def test_the_vector_listener_answers_in_qdrants_dialect(
    strict: tuple[Proc, Proc], raw: bytes, status: int
) -> None:
    _, vectors = strict
    with connect(vectors) as s:
        s.sendall(raw)
        got, _, body = Reader(s).answer()
        assert got == status and message_in("qdrant", body)


def status_kb(pid: int) -> dict[str, int]:
    """VmRSS and VmHWM (the peak) of a process, in KiB."""
    text = Path(f"/proc/{pid}/status").read_text()
    return {k: int(v.split()[0]) for k, v in (ln.split(":", 1) for ln in text.splitlines())
            if k in ("VmRSS", "VmHWM")}  # fmt: skip


def test_a_refused_requests_body_is_dropped_not_kept(tmp_path: Path) -> None:
    """64 MiB sent after a 401 (decided from the head) is read and dropped: the
    gateway's peak memory stays where it was, and the connection goes on."""
    size = 64 * 1024 * 1024
    cfg = {
        "server": {"max_body_bytes": 4 * size},
        "auth": {"master_key": "sk-master-" + "x" * 32},
        "backends": [],
    }
    with running(start_gateway(tmp_path, cfg)) as gw:
        pid = gw.proc.pid
        with connect(gw) as s:
            r = Reader(s)
            s.sendall(get("/api/version"))  # warm: the first request's allocations
            assert r.answer()[0] == 200
            Path(f"/proc/{pid}/clear_refs").write_text("5")  # the peak starts again here
            before = status_kb(pid)
            s.sendall(post("/v1/chat/completions", b"")[:-4] + b"%d\r\n\r\n" % size)
            # ^ the head declares the whole body; none of it is sent yet
            status, _, body = r.answer()
            assert status == 401 and json.loads(body)["error"]["type"] == "authentication_error"
            block = b"x" * (1024 * 1024)
            for _ in range(size // len(block)):
                s.sendall(block)
            s.sendall(get("/api/version"))  # the same connection: the body was all read
            assert r.answer()[0] == 200
            after = status_kb(pid)
        grown = after["VmHWM"] - before["VmRSS"]
        assert grown < 16 * 1024, f"peak grew {grown} KiB over {before} -> {after}"


def test_past_the_connection_cap_a_503_in_the_dialect(tmp_path: Path) -> None:
    cfg = {"server": {"max_connections": 4, "head_timeout": 120}, "backends": []}
    with running(start_gateway(tmp_path, cfg)) as gw:
        held = [connect(gw) for _ in range(4)]
        try:
            for s in held:  # each is counted: it has been answered once
                s.sendall(get("/api/version"))
                assert Reader(s).answer()[0] == 200
            for dialect in PATHS:
                method, path = PATHS[dialect]
                with connect(gw) as s:
                    s.sendall(f"{method} {path} HTTP/1.1\r\nHost: localhost\r\n\r\n".encode())
                    r = Reader(s)
                    status, headers, body = r.answer()
                    assert status == 503 and headers["retry-after"] == "1"
                    assert headers["connection"] == "close"
                    assert "server.max_connections" in message_in(dialect, body)
                    assert r.closed()
        finally:
            for s in held:
                s.close()
        # Below the cap again (once the server has seen them go): served.
        deadline = time.monotonic() + 60
        while True:
            with connect(gw) as s:
                s.sendall(get("/api/version"))
                if Reader(s).answer()[0] == 200:
                    break
            assert time.monotonic() < deadline, "still refused after the others closed"
        while "past server.max_connections (4) answered 503" not in gw.output():  # a tick's log
            assert time.monotonic() < deadline, gw.output()[-2000:]
            time.sleep(0.1)


def test_a_client_that_stops_reading_is_cut_after_the_write_timeout(
    strict: tuple[Proc, Proc],
) -> None:
    """Pipelined requests whose answers are never read: the server stops answering
    once its buffer is full, and cuts the connection after `write_timeout`."""
    gw, _ = strict
    with connect(gw) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        s.settimeout(60)
        many = get("/ui/static/console.css") * 2000
        try:
            s.sendall(many)  # never read: the server stops reading once its queue is full
        except (BrokenPipeError, ConnectionResetError):
            pass  # cut while we were still sending
        deadline = time.monotonic() + 60
        while "server.write_timeout" not in gw.output():
            assert time.monotonic() < deadline, gw.output()[-2000:]
            time.sleep(0.1)
        with pytest.raises((ConnectionResetError, BrokenPipeError, EOFError)):
            r = Reader(s)
            for _ in range(2000):
                r.answer()


@pytest.mark.parametrize(("size", "status"), [(50_000, 200), (70_000, 431)])
def test_a_head_in_two_packets_is_counted_once(gw: Proc, size: int, status: int) -> None:
    raw = get("/api/version", f"X-Big: {'a' * size}\r\n")
    with connect(gw) as s:
        s.sendall(raw[: len(raw) // 2])
        time.sleep(0.05)  # the second half arrives in a later packet
        try:
            s.sendall(raw[len(raw) // 2 :])
        except (BrokenPipeError, ConnectionResetError):
            pass  # a 431 may close before the rest is sent
        assert Reader(s).answer()[0] == status


def test_repeated_headers_are_joined_not_dropped(tmp_path: Path) -> None:
    """A proxy that splits cookies over two lines (as HTTP/2 allows): the console
    session in the first line still signs the request in."""
    master = "sk-master-" + "y" * 32
    cfg = {"auth": {"master_key": master}, "backends": []}
    with running(start_gateway(tmp_path, cfg)) as gw:
        form = f"key={master}&next=/ui/keys".encode()
        with connect(gw) as s:
            s.sendall(
                post("/ui/login", form, "Content-Type: application/x-www-form-urlencoded\r\n")
            )
            status, headers, _ = Reader(s).answer()
            assert status in (302, 303), headers
            session = headers["set-cookie"].split(";", 1)[0]
        split = f"Cookie: {session}\r\nCookie: theme=dark\r\n"
        with connect(gw) as s:
            s.sendall(get("/admin/api/me", split))
            status, _, body = Reader(s).answer()
            assert status == 200, body


def test_an_upgrade_is_answered_over_http_1_1_then_closed(gw: Proc) -> None:
    """WebSocket and h2c are not offered: the request is answered, what follows (not
    HTTP any more) is never parsed, and the connection closes."""
    with connect(gw) as s:
        r = Reader(s)
        s.sendall(
            get("/api/version", "Connection: Upgrade\r\nUpgrade: websocket\r\n") + b"\x81\x05hello"
        )
        status, headers, _ = r.answer()
        assert status == 200 and headers["connection"] == "close"
        assert r.closed()
