"""Model-aware scheduling through real processes: affinity, the fair queue, busy answers
waited out, switches that never thrash, per-model defaults, load and unload.

aistack gateways run as real processes in front of tests/fake_ollama.py: a stand-in
Ollama that keeps models in a VRAM budget, takes time (or waits for the test) to load
and to answer, counts its loads and reports /api/ps. No real Ollama or GPU can run
here, and these behaviours need a backend whose memory and timing the test controls.
The clients are the official `ollama` and `openai` libraries, or httpx for raw status
and headers.
"""

from __future__ import annotations

import re
import socket
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import ollama
import openai
import pytest

from tests.fake_ollama import FakeOllama
from tests.procs import aistack_cli, create_key, running, start_gateway, write_config

GB = 1_000_000_000
MASTER = "sk-scheduling-master-0123456789"
ENV = {"TEST_MASTER_KEY": MASTER}
MSG = [{"role": "user", "content": "hi"}]


def wait_for(cond: Callable[[], object], what: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return
        time.sleep(0.01)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


# /health's details and /metrics are for an admin (or a key with scope metrics); an
# open gateway's local callers see them too, and ignore a key nobody has.
AS_ADMIN = {"Authorization": f"Bearer {MASTER}"}


def health(url: str) -> dict[str, Any]:
    r = httpx.get(f"{url}/health", timeout=10, headers=AS_ADMIN)
    assert r.status_code == 200
    body: dict[str, Any] = r.json()
    return body


def loaded_on(url: str, backend: str) -> list[str]:
    b = next(b for b in health(url)["backends"] if b["name"] == backend)
    return [m["model"] for m in b.get("loaded", [])]


def metric(url: str, name: str, **labels: str) -> float:
    text = httpx.get(f"{url}/metrics", timeout=10, headers=AS_ADMIN).text
    total = 0.0
    for line in text.splitlines():
        m = re.match(r"^(\w+)(\{(.*)\})? (\S+)$", line)
        if m is None or m.group(1) != name:
            continue
        have = dict(re.findall(r'(\w+)="((?:[^"\\]|\\.)*)"', m.group(3) or ""))
        if all(have.get(k) == v for k, v in labels.items()):
            total += float(m.group(4))
    return total


def fakes(*names: str, **kw: Any) -> dict[str, FakeOllama]:
    out = {}
    for n in names:
        f = FakeOllama(**kw)
        out[n] = f.start()
    return out


@pytest.fixture
def stop_later() -> Iterator[list[FakeOllama]]:
    started: list[FakeOllama] = []
    yield started
    for f in started:
        f.stop()


def ollama_backend(name: str, fake: FakeOllama, **extra: Any) -> dict[str, Any]:
    return {"name": name, "kind": "ollama", "url": fake.url, **extra}


# -- affinity


def test_fifty_requests_all_go_to_the_instance_with_the_model_loaded(
    tmp_path: Path, stop_later: list[FakeOllama]
) -> None:
    boxes = fakes("a", "b", "c")
    stop_later += boxes.values()
    for f in boxes.values():
        f.add("qwen3:8b", 5 * GB)
    boxes["b"].loaded = {"qwen3:8b"}
    cfg = {
        "backends": [ollama_backend(n, f) for n, f in boxes.items()],
        "routing": {"health": {"interval": 1}},
    }
    with running(start_gateway(tmp_path, cfg)) as gw:
        wait_for(lambda: "qwen3:8b" in loaded_on(gw.url, "b"), "/health to show it loaded on b")
        client = ollama.Client(host=gw.url, timeout=30)
        oa = openai.OpenAI(base_url=f"{gw.url}/v1", api_key="x", max_retries=0)
        where = []
        for i in range(25):  # both dialects
            r = oa.chat.completions.with_raw_response.create(model="qwen3:8b", messages=MSG)  # type: ignore[arg-type]
            where.append(r.headers["x-aistack-backend"])
            client.chat(model="qwen3:8b", messages=[{"role": "user", "content": f"turn {i}"}])
        assert where == ["b"] * 25
        assert len(boxes["b"].served) == 50
        assert not boxes["a"].served and not boxes["c"].served
        assert boxes["b"].loads == []  # nothing had to be loaded anywhere
        d = next(d for d in health(gw.url)["deployments"] if d["backend"] == "b")
        assert d["loaded"] is True


# -- the queue


def _send(url: str, key: str, text: str, out: dict[str, int]) -> None:
    r = httpx.post(
        f"{url}/api/chat",
        json={"model": "m", "messages": [{"role": "user", "content": text}], "stream": False},
        headers={"Authorization": f"Bearer {key}"},
        timeout=120,
    )
    out[text] = r.status_code


def test_sixty_requests_queue_fairly_for_a_model_capped_at_two(
    tmp_path: Path, stop_later: list[FakeOllama]
) -> None:
    box = FakeOllama(hold_answers=True).start()
    stop_later.append(box)
    box.add("m", 2 * GB)
    cfg: dict[str, Any] = {
        "backends": [ollama_backend("box", box)],
        "auth": {"master_key": "${TEST_MASTER_KEY}", "refresh": 0.2},
        "database_url": str(tmp_path / "keys.db"),
        "routing": {"models": {"m": {"deployments": {"box": {"max_in_flight": 2}}}}},
    }
    config = write_config(tmp_path / "cli", cfg)
    k1 = create_key(config, "--name", "app-one", env=ENV)
    k2 = create_key(config, "--name", "app-two", env=ENV)
    status: dict[str, int] = {}
    with running(start_gateway(tmp_path, cfg, env=ENV)) as gw, ThreadPoolExecutor(64) as pool:

        def depth() -> float:
            return metric(gw.url, "aistack_queue_depth", model="m:latest")

        futures = [pool.submit(_send, gw.url, k1, f"block-{i}", status) for i in range(2)]
        wait_for(lambda: box.held() == 2, "two requests to be answering")
        # 58 more, one at a time, each in line before the next: app one's first, then
        # app two's.
        for key, app in ((k1, "one"), (k2, "two")):
            for i in range(29):
                futures.append(pool.submit(_send, gw.url, key, f"{app}-{i:02}", status))
                n = len(futures) - 2
                wait_for(lambda: depth() == n, f"{n} requests waiting")  # noqa: B023
        # A client that goes away while it waits leaves the line at once.
        with socket.create_connection(("127.0.0.1", int(gw.url.rsplit(":", 1)[1]))) as s:
            body = b'{"model": "m", "messages": [{"role": "user", "content": "gone"}]}'
            s.sendall(
                b"POST /api/chat HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\n"
                b"authorization: Bearer " + k1.encode() + b"\r\n"
                b"content-length: %d\r\n\r\n" % len(body) + body
            )
            wait_for(lambda: depth() == 59, "the leaving client to be in line")
        # It leaves before anything is released: no answer has been given, so it was
        # not its turn that let it out.
        wait_for(lambda: depth() == 58, "the client that left to leave the line")
        assert len(box.served) == 2
        # Let them through one at a time: each release lets exactly one more in.
        for i in range(60):
            box.release(1)
            wait_for(lambda: len(box.served) >= min(60, i + 3), f"answer {i}")  # noqa: B023
        for f in futures:
            f.result(timeout=60)
    order = [text for _, text in box.served]
    assert sorted(status.values()) == [200] * 60
    assert order[:2] == ["block-0", "block-1"] or order[:2] == ["block-1", "block-0"]
    ones = [t for t in order if t.startswith("one-")]
    twos = [t for t in order if t.startswith("two-")]
    assert ones == sorted(ones) and twos == sorted(twos)  # first in, first out per key
    # The keys take turns: app two's first request does not wait behind app one's 29.
    assert order[2:] == [x for pair in zip(ones, twos, strict=True) for x in pair]
    assert "gone" not in order


# -- busy answers


@pytest.mark.parametrize(("status", "retry_after"), [(503, "1"), (429, "1")])
def test_a_backend_that_says_busy_is_waited_out(
    tmp_path: Path, stop_later: list[FakeOllama], status: int, retry_after: str
) -> None:
    box = FakeOllama(busy=4, busy_status=status, busy_retry_after=retry_after).start()
    stop_later.append(box)
    box.add("m", GB)
    cfg = {
        "backends": [ollama_backend("box", box)],
        "routing": {"backoff": 0.05, "backoff_max": 0.1,
                    "cooldown": {"failures": 2, "seconds": 0.3, "max_seconds": 1}},
    }  # fmt: skip
    with running(start_gateway(tmp_path, cfg)) as gw:
        r = ollama.Client(host=gw.url, timeout=60).chat(model="m", messages=MSG)
        assert r.message.content == "answer from m:latest"
        oa = openai.OpenAI(base_url=f"{gw.url}/v1", api_key="x", max_retries=0)
        box.busy = 3
        c = oa.chat.completions.create(model="m", messages=MSG)  # type: ignore[arg-type]
        assert c.choices[0].message.content == "answer from m:latest"
        assert box.busy_answered == 7


def test_a_wait_that_runs_out_is_a_503_with_retry_after_in_each_dialect(
    tmp_path: Path, stop_later: list[FakeOllama]
) -> None:
    box = FakeOllama(busy=10_000).start()
    stop_later.append(box)
    box.add("m", GB)
    cfg = {
        "backends": [ollama_backend("box", box)],
        "routing": {"queue_timeout": 1, "backoff": 0.05, "backoff_max": 0.1},
    }
    with running(start_gateway(tmp_path, cfg)) as gw:
        r = httpx.post(f"{gw.url}/api/chat", json={"model": "m", "messages": MSG}, timeout=30)
        assert r.status_code == 503 and int(r.headers["retry-after"]) >= 1
        assert "busy" in r.json()["error"]
        r = httpx.post(f"{gw.url}/v1/chat/completions", json={"model": "m", "messages": MSG},
                       timeout=30)  # fmt: skip
        assert r.status_code == 503 and int(r.headers["retry-after"]) >= 1
        assert r.json()["error"]["type"] and "busy" in r.json()["error"]["message"]


# -- no thrash


def _alternate(chat: Callable[[str, str], None], n: int) -> None:
    """Two apps at once, each sending n requests in a row for its own model."""
    errors: list[BaseException] = []

    def app(model: str) -> None:
        try:
            for i in range(n):
                chat(model, f"{model}-{i}")
        except BaseException as e:  # reported below
            errors.append(e)

    threads = [threading.Thread(target=app, args=(m,)) for m in ("big-a", "big-b")]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert not errors, errors


def _direct(url: str) -> Callable[[str, str], None]:
    def chat(model: str, text: str) -> None:
        r = httpx.post(
            f"{url}/api/chat",
            json={"model": model, "messages": [{"role": "user", "content": text}], "stream": False},
            timeout=60,
        )
        assert r.status_code == 200, r.text

    return chat


def test_two_apps_alternating_two_models_that_do_not_fit_together_do_not_thrash(
    tmp_path: Path, stop_later: list[FakeOllama]
) -> None:
    n = 15
    # Without the scheduler: the same script straight to the instance.
    bare = FakeOllama(vram=10 * GB, answer_time=0.02).start()
    stop_later.append(bare)
    for m in ("big-a", "big-b"):
        bare.add(m, 6 * GB)
    _alternate(_direct(bare.url), n)
    assert len(bare.loads) >= n  # about one load per request

    box = FakeOllama(vram=10 * GB, answer_time=0.02).start()
    stop_later.append(box)
    for m in ("big-a", "big-b"):
        box.add(m, 6 * GB)
    cfg = {
        "backends": [ollama_backend("box", box, vram="10GB")],
        "routing": {"switch_after": 2.0, "queue_timeout": 60},
    }
    with running(start_gateway(tmp_path, cfg)) as gw:
        _alternate(_direct(gw.url), n)
        # A switch waits for the running model's requests, and for its turn: at most one
        # per switch_after while both apps keep asking.
        assert len(box.loads) <= 6, box.loads
        assert box.evicted_running == []  # never a model unloaded under a request
        assert len(box.served) == 2 * n
        wait_for(
            lambda: metric(gw.url, "aistack_model_switches_total", backend="box") >= 2,
            "switches to be counted",
        )
        mem = health(gw.url)["memory"][0]
        assert mem["budget"] == 10 * GB and mem["switches"] >= 1


def test_without_vram_the_budget_is_learned_from_an_eviction(
    tmp_path: Path, stop_later: list[FakeOllama]
) -> None:
    box = FakeOllama(vram=10 * GB).start()
    stop_later.append(box)
    for m in ("big-a", "big-b"):
        box.add(m, 6 * GB)
    cfg = {"backends": [ollama_backend("box", box)]}
    with running(start_gateway(tmp_path, cfg)) as gw:
        chat = _direct(gw.url)
        chat("big-a", "1")
        wait_for(lambda: "big-a:latest" in loaded_on(gw.url, "box"), "big-a to show loaded")
        assert health(gw.url)["memory"][0]["budget"] is None  # nothing learned yet
        chat("big-b", "2")  # the instance evicts big-a for it
        wait_for(lambda: health(gw.url)["memory"][0]["budget"] == 6 * GB, "the budget")
        assert health(gw.url)["memory"][0]["evictions_seen"] == 1


# -- defaults


def test_model_defaults_reach_the_backend_unless_the_client_set_them_or_forced(
    tmp_path: Path, stop_later: list[FakeOllama]
) -> None:
    box = FakeOllama().start()
    stop_later.append(box)
    box.add("soft", GB)
    box.add("hard", GB)
    defaults = {"num_ctx": 8192, "temperature": 0.3, "keep_alive": "30m"}
    cfg = {
        "backends": [ollama_backend("box", box)],
        "routing": {"models": {
            "soft": {"defaults": defaults},
            "hard": {"defaults": defaults, "force": True},
        }},
    }  # fmt: skip
    with running(start_gateway(tmp_path, cfg)) as gw:
        client = ollama.Client(host=gw.url, timeout=30)
        oa = openai.OpenAI(base_url=f"{gw.url}/v1", api_key="x", max_retries=0)

        def sent() -> dict[str, Any]:
            body = next(b for m, p, b in reversed(box.requests) if p == "/api/chat")
            opts = dict(body.get("options") or {})  # type: ignore[call-overload]
            return {"num_ctx": opts.get("num_ctx"), "temperature": opts.get("temperature"),
                    "keep_alive": body.get("keep_alive")}  # fmt: skip

        for model, forced in (("soft", False), ("hard", True)):
            client.chat(model=model, messages=MSG)
            assert sent() == {"num_ctx": 8192, "temperature": 0.3, "keep_alive": "30m"}
            client.chat(model=model, messages=MSG, options={"num_ctx": 2048, "temperature": 1},
                        keep_alive=-1)  # fmt: skip
            mine = {"num_ctx": 2048, "temperature": 1, "keep_alive": -1}
            assert sent() == ({"num_ctx": 8192, "temperature": 0.3, "keep_alive": "30m"}
                              if forced else mine)  # fmt: skip
            oa.chat.completions.create(model=model, messages=MSG)  # type: ignore[arg-type]
            assert sent() == {"num_ctx": 8192, "temperature": 0.3, "keep_alive": "30m"}
            oa.chat.completions.create(model=model, messages=MSG, temperature=0.9)  # type: ignore[arg-type]
            assert sent()["temperature"] == (0.3 if forced else 0.9)


# -- load, unload, preload


def test_models_are_loaded_and_unloaded_by_command_admin_api_and_preload(
    tmp_path: Path, stop_later: list[FakeOllama]
) -> None:
    a, b = FakeOllama().start(), FakeOllama(hold_answers=True).start()
    stop_later += [a, b]
    for f in (a, b):
        f.add("warm:1b", GB)
        f.add("cold:1b", GB)
    cfg: dict[str, Any] = {
        "backends": [ollama_backend("a", a, preload=["warm:1b"]), ollama_backend("b", b)],
        "auth": {"master_key": "${TEST_MASTER_KEY}"},
        "database_url": str(tmp_path / "keys.db"),
        "routing": {"health": {"interval": 1}},
    }
    config = write_config(tmp_path / "cli", cfg)
    # The command line talks to the instances themselves.
    out = aistack_cli("models", "load", "cold:1b", "--instance", "b", config=config, env=ENV)
    assert out.returncode == 0, out.stderr
    assert "loaded cold:1b on b" in out.stdout and "cold:1b" in b.loaded
    out = aistack_cli("models", "unload", "cold:1b", config=config, env=ENV)
    assert out.returncode == 0 and "unloaded cold:1b from b" in out.stdout, out.stderr
    assert "cold:1b" not in b.loaded
    with running(start_gateway(tmp_path, cfg, env=ENV)) as gw:
        # preload: loaded at start, and shown where it is.
        wait_for(lambda: "warm:1b" in a.loaded, "the preload")
        wait_for(lambda: "warm:1b" in loaded_on(gw.url, "a"), "/health to show the preload")
        admin = {"Authorization": f"Bearer {MASTER}"}

        def post(verb: str, **body: str) -> httpx.Response:
            return httpx.post(f"{gw.url}/admin/api/models/{verb}", json=body, headers=admin,
                              timeout=30)  # fmt: skip

        r = post("load", model="cold:1b", backend="b")
        assert r.status_code == 200 and r.json()["backend"] == "b", r.text
        assert "cold:1b" in b.loaded and "cold:1b" in loaded_on(gw.url, "b")
        # A model answering a request is never unloaded: 409, and it stays.
        t = threading.Thread(
            target=lambda: httpx.post(f"{gw.url}/api/chat", headers=admin, timeout=60,
                                      json={"model": "cold:1b", "messages": MSG, "stream": False}),
        )  # fmt: skip
        t.start()
        wait_for(lambda: b.held() == 1, "the request to be answering")
        r = post("unload", model="cold:1b", backend="b")
        assert r.status_code == 409 and "answering a request" in r.json()["error"]["message"]
        assert "cold:1b" in b.loaded
        b.release(1)
        t.join(30)
        r = post("unload", model="cold:1b")
        assert r.status_code == 200 and r.json()["unloaded"] == ["b"], r.text
        assert "cold:1b" not in b.loaded and "cold:1b" not in loaded_on(gw.url, "b")
        r = post("load", model="nope:1b")
        assert r.status_code == 404
        # An instance that comes back after being down gets its preload again.
        port = int(a.url.rsplit(":", 1)[1])
        a.stop()
        wait_for(lambda: next(x for x in health(gw.url)["backends"] if x["name"] == "a")["state"]
                 == "down", "a to be seen down")  # fmt: skip
        a.loaded.clear()  # a restart empties its memory
        a.start(port)
        wait_for(lambda: "warm:1b" in a.loaded, "the preload after it came back")
        r = httpx.post(f"{gw.url}/admin/api/models/load", json={"model": "cold:1b"}, timeout=10)
        assert r.status_code == 401


# -- sticky conversations


def test_the_turns_of_a_sticky_conversation_stay_on_one_instance(
    tmp_path: Path, stop_later: list[FakeOllama]
) -> None:
    boxes = fakes("a", "b", "c")
    stop_later += boxes.values()
    for f in boxes.values():
        f.add("chat:1b", GB)
        f.add("plain:1b", GB)
        f.loaded = {"chat:1b", "plain:1b"}
    cfg = {
        "backends": [ollama_backend(n, f) for n, f in boxes.items()],
        "routing": {"models": {"chat:1b": {"sticky": True}}},
    }
    with running(start_gateway(tmp_path, cfg)) as gw:
        oa = openai.OpenAI(base_url=f"{gw.url}/v1", api_key="x", max_retries=0)

        def turns(model: str, first: str, n: int, **kw: Any) -> set[str]:
            msgs: list[dict[str, str]] = [{"role": "system", "content": "You help."},
                                          {"role": "user", "content": first}]  # fmt: skip
            seen = set()
            for i in range(n):
                r = oa.chat.completions.with_raw_response.create(model=model, messages=msgs, **kw)  # type: ignore[arg-type]
                seen.add(r.headers["x-aistack-backend"])
                msgs += [{"role": "assistant", "content": "ok"},
                         {"role": "user", "content": f"and {i}?"}]  # fmt: skip
            return seen

        assert len(turns("chat:1b", "Plan a trip.", 6)) == 1
        assert len(turns("chat:1b", "Write a poem.", 6)) == 1
        header = {"extra_headers": {"X-Aistack-Session": "conv-42"}}
        picked = turns("chat:1b", "One.", 3, **header) | turns("chat:1b", "Two.", 3, **header)
        assert len(picked) == 1  # the header names the conversation, whatever it says
        assert len(turns("plain:1b", "Plan a trip.", 6)) > 1  # not sticky: spread
