"""Thinking and keep-alives in the agents' streams, against a scripted upstream.

The upstream is a small server speaking Ollama's documented /api/chat stream (a backend
that reasons: `thinking` lines before the answer), because the embedded model does not
reason. It can hold its first line until the test lets it go, which plays a backend
that is slow to start (a model loading): the gateway must keep the stream alive with
Anthropic's `ping` (Responses: an SSE comment) meanwhile. The test waits on what it
reads, never on a clock.
"""

from __future__ import annotations

import asyncio
import http.client
import json
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import anthropic
import openai
import pytest

from tests.faults import FaultServer, chunk, response_head
from tests.procs import Proc, running, start_gateway

MODEL = "thinker:latest"


class ScriptedOllama:
    """/api/chat answers with thinking lines, then the answer; `hold` keeps the first
    line back until it is set."""

    def __init__(self) -> None:
        self.hold = threading.Event()
        self.hold.set()

    async def __call__(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, req: bytes
    ) -> None:
        line = req.split(b"\r\n", 1)[0]
        if b"/api/tags" in line:
            body = json.dumps({"models": [{"name": MODEL, "model": MODEL, "size": 1}]}).encode()
        elif b"/api/chat" not in line:
            body = json.dumps({"version": "0.13.0"}).encode()
        else:
            await asyncio.to_thread(self.hold.wait, 120)
            if b'"stream":false' in req or b'"stream": false' in req:
                whole = {"model": MODEL, "done": True, "done_reason": "stop",
                         "message": {"role": "assistant", "content": "Hello!",
                                     "thinking": "The user greets."},
                         "prompt_eval_count": 5, "eval_count": 4}  # fmt: skip
                body = json.dumps(whole).encode()
                writer.write(response_head(200, b"application/json", length=len(body)) + body)
                await writer.drain()
                return
            writer.write(response_head(200, b"application/x-ndjson"))
            for msg in ({"thinking": "The user"}, {"thinking": " greets."}, {"content": "Hello!"}):
                obj = {"model": MODEL, "message": {"role": "assistant", "content": "", **msg},
                       "done": False}  # fmt: skip
                writer.write(chunk(json.dumps(obj).encode() + b"\n"))
            final = {"model": MODEL, "message": {"role": "assistant", "content": ""},
                     "done": True, "done_reason": "stop", "prompt_eval_count": 5,
                     "eval_count": 4}  # fmt: skip
            writer.write(chunk(json.dumps(final).encode() + b"\n") + b"0\r\n\r\n")
            await writer.drain()
            return
        writer.write(response_head(200, b"application/json", length=len(body)) + body)
        await writer.drain()


@pytest.fixture(scope="module")
def scripted() -> Iterator[ScriptedOllama]:
    yield ScriptedOllama()


@pytest.fixture(scope="module")
def gw(tmp_path_factory: pytest.TempPathFactory, scripted: ScriptedOllama) -> Iterator[Proc]:
    server = FaultServer(scripted).start()
    cfg: dict[str, object] = {
        "backends": [{"name": "thinker", "kind": "ollama", "url": server.url}],
        "agents": {"keepalive": 0.05},
    }
    try:
        with running(start_gateway(Path(tmp_path_factory.mktemp("agents")), cfg)) as p:
            yield p
    finally:
        scripted.hold.set()
        server.stop()


def test_thinking_streams_as_a_thinking_block_before_the_text(gw: Proc) -> None:
    c = anthropic.Anthropic(base_url=gw.url, api_key="x", max_retries=0, timeout=60)
    with c.messages.stream(
        model=MODEL,
        max_tokens=100,
        thinking={"type": "enabled", "budget_tokens": 1024},
        messages=[{"role": "user", "content": "Hi"}],
    ) as s:
        final = s.get_final_message()
    assert [b.type for b in final.content] == ["thinking", "text"]
    assert final.content[0].thinking == "The user greets."  # type: ignore[union-attr]
    assert final.content[1].text == "Hello!"  # type: ignore[union-attr]
    whole = c.messages.create(
        model=MODEL, max_tokens=100, messages=[{"role": "user", "content": "Hi"}]
    )
    assert whole.content[0].type == "thinking" and whole.content[1].type == "text"


def test_reasoning_streams_as_a_reasoning_item_with_its_summary(gw: Proc) -> None:
    c = openai.OpenAI(base_url=f"{gw.url}/v1", api_key="x", max_retries=0, timeout=60)
    with c.responses.stream(model=MODEL, input="Hi", reasoning={"summary": "auto"}) as s:
        deltas = [e.delta for e in s if e.type == "response.reasoning_summary_text.delta"]
        final = s.get_final_response()
    assert "".join(deltas) == "The user greets."
    assert [o.type for o in final.output] == ["reasoning", "message"]
    assert final.output_text == "Hello!"


def _read_until(resp: http.client.HTTPResponse, marker: bytes) -> list[bytes]:
    lines = []
    while True:
        line = resp.readline()
        assert line, f"the stream ended before {marker!r}"
        lines.append(line)
        if line.startswith(marker):
            return lines


def _stream(gw: Proc, path: str, body: dict[str, Any]) -> http.client.HTTPResponse:
    u = urlsplit(gw.url)
    conn = http.client.HTTPConnection(u.hostname or "", u.port, timeout=60)
    conn.request("POST", path, json.dumps(body), {"content-type": "application/json"})
    return conn.getresponse()


@pytest.mark.parametrize(
    ("path", "body", "keepalive", "last"),
    [
        ("/v1/messages", {"max_tokens": 50}, b"event: ping", b"event: message_stop"),
        ("/v1/responses", {}, b": keep-alive", b"event: response.completed"),
    ],
    ids=["anthropic-ping", "responses-comment"],
)
def test_a_slow_backend_gets_keepalives_and_then_the_answer(
    gw: Proc, scripted: ScriptedOllama, path: str, body: dict[str, Any], keepalive: bytes,
    last: bytes,
) -> None:  # fmt: skip
    scripted.hold.clear()
    try:
        msg = [{"role": "user", "content": "Hi"}]
        payload = {"model": MODEL, "stream": True, **body}
        payload["messages" if path == "/v1/messages" else "input"] = msg
        resp = _stream(gw, path, payload)
        assert resp.status == 200  # the stream opened while the backend said nothing
        before = _read_until(resp, keepalive)
        assert not any(b"delta" in line for line in before)
        scripted.hold.set()
        after = _read_until(resp, last)
        assert any(b"Hello!" in line for line in after)
    finally:
        scripted.hold.set()
