"""Backend failures reach the caller in its own dialect, with the right status.

Backend 404 -> 404; unreachable -> 502 naming the backend; no first byte in time ->
504; a stream cut mid-way -> a dialect-correct terminal error the client library
raises; a caller that disconnects stops the generation on the backend.
"""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import ollama
import openai
import pytest

from tests import faults
from tests.conftest import Stack
from tests.procs import Proc, free_port, running, start_gateway


@dataclass
class Faulty:
    gw: Proc
    silent: faults.FaultServer
    cut_ollama: faults.FaultServer
    cut_openai: faults.FaultServer


@pytest.fixture(scope="module")
def faulty(tmp_path_factory: pytest.TempPathFactory, stack: Stack) -> Iterator[Faulty]:
    silent = faults.FaultServer(faults.silent).start()
    cut_ollama = faults.FaultServer(faults.ollama_cut_stream()).start()
    cut_openai = faults.FaultServer(faults.openai_cut_stream()).start()
    dead_port = free_port()  # nothing listens here
    cfg = {
        "backends": [
            {"name": "dead", "kind": "ollama", "url": f"http://127.0.0.1:{dead_port}",
             "models": ["ghost-dead:1b"], "discover": False},
            {"name": "silent", "kind": "openai", "url": f"{silent.url}/v1",
             "models": ["ghost-silent"], "discover": False,
             "timeouts": {"connect": 1, "first_token": 0.5}},
            {"name": "cut-ollama", "kind": "ollama", "url": cut_ollama.url,
             "models": ["cut-ollama:1b"]},
            {"name": "cut-openai", "kind": "openai", "url": f"{cut_openai.url}/v1",
             "models": ["cut-openai"]},
            {"name": "upstream", "kind": "ollama", "url": stack.upstream.url,
             "models": ["ghost-missing:7b"]},
        ]
    }  # fmt: skip
    tmp = tmp_path_factory.mktemp("faulty")
    with running(start_gateway(tmp, cfg, name="faulty")) as gw:
        yield Faulty(gw, silent, cut_ollama, cut_openai)
    for s in (silent, cut_ollama, cut_openai):
        s.stop()


def _ollama(f: Faulty) -> ollama.Client:
    return ollama.Client(host=f.gw.url, timeout=30)


def _openai(f: Faulty) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{f.gw.url}/v1", api_key="x", timeout=30, max_retries=0)


MSG = [{"role": "user", "content": "hi"}]


def test_backend_404_is_404(faulty: Faulty) -> None:
    with pytest.raises(ollama.ResponseError) as e:
        _ollama(faulty).chat("ghost-missing:7b", messages=MSG)
    assert e.value.status_code == 404 and "not found" in e.value.error
    with pytest.raises(openai.NotFoundError):
        _openai(faulty).chat.completions.create(model="ghost-missing:7b", messages=MSG)  # type: ignore[arg-type]


def test_unreachable_backend_is_502_naming_it(faulty: Faulty) -> None:
    with pytest.raises(ollama.ResponseError) as e:
        _ollama(faulty).chat("ghost-dead:1b", messages=MSG)
    assert e.value.status_code == 502
    assert "backend 'dead'" in e.value.error and "unreachable" in e.value.error
    with pytest.raises(openai.APIStatusError) as oe:
        _openai(faulty).chat.completions.create(model="ghost-dead:1b", messages=MSG)  # type: ignore[arg-type]
    assert oe.value.status_code == 502
    assert isinstance(oe.value.body, dict) and oe.value.body["type"] == "api_error"


def test_no_first_byte_in_time_is_504(faulty: Faulty) -> None:
    # The silent backend never answers: only the gateway's first-token timeout (0.5 s)
    # can end this with a 504 (the client's own 30 s timeout raises APITimeoutError).
    # No clock is read: on a busy machine the 504 may take longer than any fixed bound.
    with pytest.raises(openai.APIStatusError) as e:
        _openai(faulty).chat.completions.create(model="ghost-silent", messages=MSG)  # type: ignore[arg-type]
    assert e.value.status_code == 504
    assert "timed out" in str(e.value)


def test_ollama_stream_cut_midway_ends_in_an_error_line(faulty: Faulty) -> None:
    with httpx.stream(
        "POST", f"{faulty.gw.url}/api/chat", json={"model": "cut-ollama:1b", "messages": MSG}
    ) as r:
        assert r.status_code == 200
        lines = [line for line in r.iter_lines() if line]
    assert len(lines) == 3
    assert '"done":false' in lines[0] and '"done":false' in lines[1]
    assert lines[-1].startswith('{"error":') and "cut-ollama" in lines[-1]
    with pytest.raises(ollama.ResponseError):
        list(_ollama(faulty).chat("cut-ollama:1b", messages=MSG, stream=True))


def test_openai_stream_cut_midway_raises_in_the_sdk(faulty: Faulty) -> None:
    stream = _openai(faulty).chat.completions.create(
        model="cut-openai",
        messages=MSG,  # type: ignore[arg-type]
        stream=True,
    )
    got: list[str] = []
    with pytest.raises(openai.APIError) as e:
        for c in stream:
            got.append(c.choices[0].delta.content or "")
    assert "".join(got) == "part0 part1 "
    assert "cut-openai" in str(e.value.message)
    with httpx.stream(
        "POST",
        f"{faulty.gw.url}/v1/chat/completions",
        json={"model": "cut-openai", "messages": MSG, "stream": True},
    ) as r:
        body = r.read()
    assert b"[DONE]" not in body and b'"error"' in body


def test_unreachable_while_listing_does_not_break_the_list(faulty: Faulty) -> None:
    names = {m.model for m in _ollama(faulty).list().models}
    assert "ghost-dead:1b" in names  # declared models stay listed while the box is down


def test_a_caller_that_disconnects_stops_the_backend(stack: Stack) -> None:
    """Through two gateways: client -> gateway -> upstream aistack -> its engine."""
    before = stack.upstream.output().count("generation stopped")
    body = (
        b'{"model":"smollm2-upstream:135m","messages":[{"role":"user","content":"Write a '
        b'very long story."}],"options":{"num_predict":3000,"temperature":1}}'
    )
    host, port = stack.url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port))) as s:
        s.sendall(
            b"POST /api/chat HTTP/1.1\r\nhost: localhost\r\ncontent-type: application/json\r\n"
            b"content-length: %d\r\n\r\n%s" % (len(body), body)
        )
        got = b""
        while got.count(b'"done":false') < 3:
            got += s.recv(65536)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if stack.upstream.output().count("generation stopped") > before:
            break
        time.sleep(0.1)
    assert stack.upstream.output().count("generation stopped") > before
    assert "the client went away" in stack.gateway.output()
    # The abandoned answer no longer counts against the deployment's in-flight total.
    deps = httpx.get(f"{stack.url}/health").json()["deployments"]
    up = next(d for d in deps if d["backend"] == "upstream")
    assert up["in_flight"] == 0 and up["consecutive_failures"] == 0


def test_config_error_names_file_key_and_problem(tmp_path: Path) -> None:
    import subprocess

    from tests.procs import VENV_BIN

    cfg = tmp_path / "bad.yaml"
    cfg.write_text("server:\n  prot: 1\n")
    r = subprocess.run(
        [str(VENV_BIN / "aistack"), "serve", "--config", str(cfg)], capture_output=True, text=True
    )
    assert r.returncode == 2
    assert f"{cfg}: server: " in r.stderr and "prot" in r.stderr
