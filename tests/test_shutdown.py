"""Shutdown, always clean: whatever ran before, SIGTERM ends with exit 0 and every answered
request in the ledger; what outruns `server.shutdown_grace` is ended by the server with
its dialect's error and booked as cut (status 503, SERVER_CUT, partial).

Each test runs `aistack serve` as a process and talks to it over sockets; the streams
that must be running when the signal comes run against tests/fake_ollama.py, which can
stall a stream mid-way (a real backend cannot be made to on demand).
"""

from __future__ import annotations

import json
import signal
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from aistack.backends.local import engine_available
from aistack.store import UsageRow, open_store
from tests.conftest import LOCAL_MODEL
from tests.fake_ollama import FakeOllama
from tests.procs import Proc, start_gateway

MODEL = "llama3.2:1b"
CHAT = [{"role": "user", "content": "tell me a long story"}]

embedded = pytest.mark.skipif(not engine_available(), reason="the embedded engine is not installed")


def ledger(tmp: Path, name: str = "gw") -> list[UsageRow]:
    """Every row the stopped gateway wrote (its SQLite file in the test's folder), oldest
    first."""
    store = open_store(str(tmp / name / "data" / "aistack" / "aistack.db"))
    try:
        return store.requests(limit=1000)[::-1]
    finally:
        store.close()


def wait_for(what: str, check: object, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():  # type: ignore[operator]
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.02)


def stop(gw: Proc, timeout: float = 120.0) -> int:
    """SIGTERM, then the exit status (generous: the machine may be busy)."""
    gw.proc.send_signal(signal.SIGTERM)
    try:
        return gw.proc.wait(timeout)
    except Exception:
        gw.stop(signal.SIGKILL)
        raise


@embedded
def test_sigterm_after_empty_inputs_exits_0_with_every_answered_request_booked(
    tmp_path: Path,
) -> None:
    # An empty embedding once crashed the process at exit (SIGSEGV, the ledger's last
    # rows lost): llama-cpp-python wrote before its batch buffer for an input of no tokens.
    gw = start_gateway(tmp_path, {"server": {"shutdown_grace": 5}})
    statuses: list[int] = []
    try:
        with httpx.Client(base_url=gw.url, timeout=300) as c:
            for path, body in [
                ("/api/embed", {"model": LOCAL_MODEL, "input": "hello"}),
                ("/api/embed", {"model": LOCAL_MODEL, "input": [""]}),
                ("/api/embed", {"model": LOCAL_MODEL, "input": ""}),
                ("/v1/embeddings", {"model": LOCAL_MODEL, "input": [""]}),
                ("/api/generate", {"model": LOCAL_MODEL, "prompt": "", "raw": True,
                                   "stream": False}),
                ("/api/chat", {"model": LOCAL_MODEL, "messages": [{"role": "user",
                               "content": "hi"}], "stream": False,
                               "options": {"num_predict": 3}}),
            ]:  # fmt: skip
                r = c.post(path, json=body)
                assert r.status_code < 500, r.text
                statuses.append(r.status_code)
    except BaseException:
        gw.stop(signal.SIGKILL)
        raise
    assert stop(gw) == 0, gw.output()[-4000:]
    assert statuses[0] == 200 and statuses[-1] == 200
    rows = ledger(tmp_path)
    assert [r.status for r in rows] == statuses
    assert "rows written, 0 dropped" in gw.output()


@embedded
def test_sigterm_during_a_long_embedding_cuts_it_and_exits_0(tmp_path: Path) -> None:
    gw = start_gateway(tmp_path, {"server": {"shutdown_grace": 1}, "metrics": {"auth": False}})
    got: dict[str, httpx.Response | BaseException] = {}

    def long_embedding() -> None:
        try:
            got["r"] = httpx.post(
                f"{gw.url}/api/embed",
                # Hundreds of batches: minutes of work, far past the grace.
                json={"model": LOCAL_MODEL, "input": ["word " * 400] * 400},
                timeout=300,
            )
        except BaseException as e:
            got["r"] = e

    def running() -> bool:
        m = httpx.get(f"{gw.url}/metrics", timeout=30).text
        return f'aistack_in_flight{{deployment="local/{LOCAL_MODEL}"}} 1' in m

    try:
        warm = httpx.post(
            f"{gw.url}/api/embed", json={"model": LOCAL_MODEL, "input": "hello"}, timeout=300
        )
        assert warm.status_code == 200
        t = threading.Thread(target=long_embedding)
        t.start()
        wait_for("the long embedding to reach the engine", running, 120)
    except BaseException:
        gw.stop(signal.SIGKILL)
        raise
    started = time.monotonic()
    assert stop(gw) == 0, gw.output()[-4000:]
    t.join(60)
    r = got["r"]
    assert isinstance(r, httpx.Response), r
    # Cut at the grace with a 503 in the route's dialect, the engine stopped mid-batch.
    assert r.status_code == 503
    assert "shutting down" in r.json()["error"]
    assert time.monotonic() - started < 60, "the engine was waited for, not stopped"
    rows = ledger(tmp_path)
    assert [(x.status, x.error) for x in rows] == [(200, ""), (503, "SERVER_CUT")]
    assert "cut by the server's shutdown" in gw.output()


@pytest.fixture
def stalling() -> Iterator[FakeOllama]:
    """A backend whose streams send 3 chunks, then nothing until their caller leaves."""
    box = FakeOllama(stream_chunks=100, stall_after=3)
    box.add(MODEL)
    box.start()
    yield box
    box.stop()


def _read_all(gw: Proc, path: str, body: dict[str, object], out: list[str]) -> None:
    with httpx.stream("POST", f"{gw.url}{path}", json=body, timeout=120) as r:
        out.append(str(r.status_code))
        out.extend(r.iter_lines())


def test_streams_past_the_grace_end_with_their_dialects_error_and_are_booked_cut(
    tmp_path: Path, stalling: FakeOllama
) -> None:
    cfg = {
        "server": {"shutdown_grace": 1},
        "backends": [{"name": "box", "kind": "ollama", "url": stalling.url, "models": [MODEL]}],
    }
    gw = start_gateway(tmp_path, cfg)
    streams = {
        "ollama": ("/api/chat", {"model": MODEL, "messages": CHAT}),
        "openai": ("/v1/chat/completions", {"model": MODEL, "messages": CHAT, "stream": True}),
        "anthropic": (
            "/v1/messages",
            {"model": MODEL, "messages": CHAT, "max_tokens": 100, "stream": True},
        ),
        "responses": ("/v1/responses", {"model": MODEL, "input": "a story", "stream": True}),
    }
    lines: dict[str, list[str]] = {k: [] for k in streams}
    threads = [
        threading.Thread(target=_read_all, args=(gw, path, body, lines[k]))
        for k, (path, body) in streams.items()
    ]
    try:
        for t in threads:
            t.start()
        wait_for("every stream to stall mid-way", lambda: stalling.stalled == len(streams))
    except BaseException:
        gw.stop(signal.SIGKILL)
        raise
    assert stop(gw) == 0, gw.output()[-4000:]
    for t in threads:
        t.join(60)
    for k, got in lines.items():
        assert got[0] == "200", (k, got)
    text = {k: "\n".join(v) for k, v in lines.items()}
    # Ollama: a last {"error": ...} line, after the chunks streamed.
    last = json.loads(lines["ollama"][-1])
    assert "shutting down" in last["error"] and '"tok "' in text["ollama"]
    # OpenAI: an error data event and no [DONE] (the SDKs raise).
    assert '"error"' in text["openai"] and "shutting down" in text["openai"]
    assert "[DONE]" not in text["openai"]
    # Anthropic: event: error.
    assert "event: error" in text["anthropic"] and "shutting down" in text["anthropic"]
    # Responses: response.failed, then an error event.
    assert "event: response.failed" in text["responses"] and "event: error" in text["responses"]
    rows = ledger(tmp_path)
    assert len(rows) == len(streams)
    for r in rows:
        # Cut by the server, not closed by the client (499); booked with what was
        # streamed: 3 chunks of about a token, estimated, partial.
        assert (r.status, r.error, r.partial, r.stream) == (503, "SERVER_CUT", 1, 1), r
        assert r.tokens_out == 3 and r.tokens_estimated == 1 and r.tokens_in > 0, r
    assert stalling.abandoned == len(streams)  # and the backend was let go
    out = gw.output()
    assert out.count("stream cut by the server's shutdown") == len(streams)


def test_a_pull_streaming_past_the_grace_ends_with_an_error_line(tmp_path: Path) -> None:
    # A model pull is an Ollama stream too: cut by the shutdown, it ends as Ollama ends
    # a failed pull, with an {"error": ...} line (the pull itself goes on on the box).
    box = FakeOllama(steps=2000, delay=0.05)
    box.registry["big:latest"] = 10**9
    box.start()
    try:
        cfg = {
            "server": {"shutdown_grace": 1},
            "backends": [{"name": "box", "kind": "ollama", "url": box.url}],
        }
        gw = start_gateway(tmp_path, cfg)
        lines: list[str] = []
        t = threading.Thread(
            target=_read_all, args=(gw, "/api/pull", {"model": "big", "stream": True}, lines)
        )
        try:
            t.start()
            wait_for("the pull to stream", lambda: len(lines) > 3)
        except BaseException:
            gw.stop(signal.SIGKILL)
            raise
        assert stop(gw) == 0, gw.output()[-4000:]
        t.join(60)
        assert lines[0] == "200"
        assert "shutting down" in json.loads(lines[-1])["error"], lines[-3:]
        assert not any('"success"' in x for x in lines)
    finally:
        box.stop()
