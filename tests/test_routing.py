"""Routing and resilience through real processes: pools, fallbacks, retries, cooldowns.

Backends that speak the real dialects (aistack processes running the embedded model,
llama-cpp-python's server) wherever a real one can show the behaviour; small local
stubs (tests/faults.py) only for what a real backend cannot be made to do on demand:
answer 429 with Retry-After, hold its first byte, or answer instantly so a few hundred
requests measure the router rather than a model.
"""

from __future__ import annotations

import signal
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import anthropic
import httpx
import ollama
import openai
import pytest

from tests import faults
from tests.conftest import LLAMACPP_MODEL, UPSTREAM_MODEL, Stack
from tests.procs import Proc, free_port, running, start_gateway

MSG = [{"role": "user", "content": "Say hello."}]


def health(url: str) -> dict[str, Any]:
    r = httpx.get(f"{url}/health", timeout=10)
    assert r.status_code == 200
    body: dict[str, Any] = r.json()
    return body


def deployment(url: str, backend: str, model: str | None = None) -> dict[str, Any]:
    for d in health(url)["deployments"]:
        if d["backend"] == backend and (model is None or d["model"].startswith(model)):
            return dict(d)
    raise AssertionError(f"no deployment of {model} on {backend} in /health")


def wait_for(cond: Any, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return
        time.sleep(0.1)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


# ---------------------------------------------------------------------------------------
# Two aistack processes serve one model; one is killed in the middle of a bounded load.

TWIN_MODEL = "twin:135m"


@dataclass
class Twins:
    gw: Proc
    backends: dict[str, Proc]


@pytest.fixture
def twins(tmp_path: Path) -> Iterator[Twins]:
    def engine() -> dict[str, object]:
        return {
            "backends": [
                {"name": "local", "kind": "local", "model_name": TWIN_MODEL, "n_threads": 1}
            ]
        }

    with (
        running(start_gateway(tmp_path, engine(), name="twin-a")) as a,
        running(start_gateway(tmp_path, engine(), name="twin-b")) as b,
    ):
        cfg = {
            "backends": [
                {"name": "a", "kind": "ollama", "url": a.url},
                {"name": "b", "kind": "ollama", "url": b.url},
            ],
            "routing": {"health": {"interval": 1}},
        }
        with running(start_gateway(tmp_path, cfg, name="twins-gw")) as gw:
            yield Twins(gw, {"a": a, "b": b})


@dataclass
class Call:
    """One client request, as the client library saw it."""

    client: str  # "ollama" | "openai"
    stream: bool
    backend: str = ""
    attempts: int = 1
    chunks: int = 0
    done: bool = False
    error: BaseException | None = None
    thread: threading.Thread | None = field(default=None, repr=False)


def _hooks(call: Call) -> dict[str, list[Any]]:
    def on_response(resp: httpx.Response) -> None:
        call.backend = resp.headers.get("x-aistack-backend", "")
        call.attempts = int(resp.headers.get("x-aistack-attempts", "1"))

    return {"response": [on_response]}


def _run(url: str, call: Call, prompt: str, tokens: int) -> None:
    messages = [{"role": "user", "content": prompt}]
    try:
        if call.client == "ollama":
            oc = ollama.Client(host=url, timeout=120, event_hooks=_hooks(call))
            opts = {"num_predict": tokens, "temperature": 1}
            if call.stream:
                for part in oc.chat(TWIN_MODEL, messages=messages, stream=True, options=opts):
                    call.chunks += 1
                    call.done = call.done or bool(part.done)
            else:
                r = oc.chat(TWIN_MODEL, messages=messages, options=opts)
                call.done = bool(r.done)
        else:
            http = httpx.Client(timeout=120, event_hooks=_hooks(call))
            cl = openai.OpenAI(base_url=f"{url}/v1", api_key="x", max_retries=0, http_client=http)
            if call.stream:
                for c in cl.chat.completions.create(
                    model=TWIN_MODEL,
                    messages=messages,  # type: ignore[arg-type]
                    stream=True,
                    max_tokens=tokens,
                    temperature=1,
                ):
                    call.chunks += 1
                    call.done = call.done or bool(c.choices and c.choices[0].finish_reason)
            else:
                r2 = cl.chat.completions.create(
                    model=TWIN_MODEL,
                    messages=messages,  # type: ignore[arg-type]
                    max_tokens=tokens,
                    temperature=1,
                )
                call.done = r2.choices[0].finish_reason is not None
    except Exception as e:
        call.error = e


def _start(url: str, call: Call, prompt: str, tokens: int) -> Call:
    call.thread = threading.Thread(target=_run, args=(url, call, prompt, tokens), daemon=True)
    call.thread.start()
    return call


@pytest.mark.slow
def test_a_backend_killed_under_load_fails_no_request_that_had_not_started(twins: Twins) -> None:
    url = twins.gw.url
    # Four long streams, two per backend: on each, one generates and one waits its turn
    # (the embedded engine makes one answer at a time).
    streams = []
    for i in range(4):
        call = Call("ollama" if i % 2 else "openai", stream=True)
        streams.append(_start(url, call, "Write a very long story about a dragon.", 120))
        time.sleep(0.3)
    # A bounded load of short answers from both client libraries, six at a time.
    plain: list[Call] = []

    def load() -> None:
        for j in range(4):
            c = Call("ollama" if j % 2 else "openai", stream=False)
            _run(url, c, "Say hello.", 3)
            plain.append(c)

    workers = [threading.Thread(target=load, daemon=True) for _ in range(6)]
    for w in workers:
        w.start()

    # Kill the backend of a stream that is generating right now.
    wait_for(lambda: any(s.chunks >= 3 and not s.done for s in streams), 60, "a stream")
    victim = next(s for s in streams if s.chunks >= 3 and not s.done).backend
    survivor = "b" if victim == "a" else "a"
    twins.backends[victim].stop(signal.SIGKILL)

    for t in [*workers, *(s.thread for s in streams)]:
        assert t is not None
        t.join(150)
        assert not t.is_alive(), "a request did not finish"

    # Zero failed non-streaming requests.
    assert len(plain) == 24
    assert [c.error for c in plain if c.error is not None] == []
    assert all(c.done for c in plain)
    # Streams in flight on the killed backend end with an error the client library raises;
    # every other stream, including those that had not started on it, completes.
    broken = [s for s in streams if s.error is not None]
    assert broken, "no stream was in flight on the killed backend"
    for s in broken:
        assert s.backend == victim and s.chunks > 0 and not s.done
        assert isinstance(s.error, ollama.ResponseError | openai.APIError), repr(s.error)
        assert f"backend '{victim}'" in str(s.error)
    finished = [s for s in streams if s.error is None]
    assert finished and all(s.done for s in finished)
    # Requests that were waiting on the killed backend were retried on the other one.
    retried = [c for c in [*streams, *plain] if c.attempts > 1]
    assert retried and all(c.backend == survivor and c.done for c in retried)
    assert any(s.attempts > 1 for s in finished), "no stream was retried before its first byte"

    # The gateway knows: the dead one is out, and nothing is left counted in flight.
    wait_for(
        lambda: deployment(url, victim)["state"] in ("down", "cooldown"), 60, "the dead backend out"
    )
    d = deployment(url, victim)
    assert d["in_flight"] == 0 and d["errors"] >= 1 and d["last_error"]
    assert deployment(url, survivor)["in_flight"] == 0
    # And the next requests go straight to the survivor.
    after = Call("ollama", stream=False)
    _run(url, after, "Say hello.", 3)
    assert after.error is None and after.backend == survivor and after.attempts == 1


# ---------------------------------------------------------------------------------------
# One gateway in front of stubs, dead ports and real backends, for the other behaviours.


@dataclass
class Routed:
    gw: Proc
    stubs: dict[str, faults.OpenAIStub]


@pytest.fixture(scope="module")
def routed(tmp_path_factory: pytest.TempPathFactory, stack: Stack) -> Iterator[Routed]:
    stubs = {
        "flaky": faults.OpenAIStub("flaky-model"),
        "steady": faults.OpenAIStub("flaky-model"),
        "slow": faults.OpenAIStub("slow-model"),
        "w1": faults.OpenAIStub("dist-least", "dist-weighted", "dist-priority"),
        "w2": faults.OpenAIStub("dist-least", "dist-weighted", "dist-priority"),
        "fast": faults.OpenAIStub("dist-latency"),
        "laggy": faults.OpenAIStub("dist-latency"),
        "capped": faults.OpenAIStub("busy-model"),
        "overflow": faults.OpenAIStub("busy-model"),
    }
    stubs["capped"].first_byte_delay = 0.5
    stubs["slow"].first_byte_delay = 300.0  # longer than any client waits
    stubs["laggy"].first_byte_delay = 0.03
    servers = {name: faults.FaultServer(stub).start() for name, stub in stubs.items()}
    tmp = tmp_path_factory.mktemp("routed")
    short = {
        "backends": [
            {"name": "local", "kind": "local", "model_name": "short:135m", "n_ctx": 256,
             "n_threads": 1}
        ]
    }  # fmt: skip
    with running(start_gateway(tmp, short, name="shorty")) as shorty:
        extra: dict[str, dict[str, object]] = {
            "slow": {"timeouts": {"first_token": 0.5}},
            "capped": {"max_in_flight": 1},
            "overflow": {"priority": 1},
        }
        backends: list[dict[str, object]] = [
            {"name": name, "kind": "openai", "url": f"{srv.url}/v1", **extra.get(name, {})}
            for name, srv in servers.items()
        ]
        backends += [
            {"name": "dead1", "kind": "ollama", "url": f"http://127.0.0.1:{free_port()}",
             "models": ["chain-model:1b"], "discover": False},
            {"name": "dead2", "kind": "ollama", "url": f"http://127.0.0.1:{free_port()}",
             "models": ["chain-model:1b"], "discover": False},
            {"name": "upstream", "kind": "ollama", "url": stack.upstream.url},
            {"name": "llamacpp", "kind": "openai", "url": f"{stack.llama.url}/v1"},
            {"name": "shorty", "kind": "ollama", "url": shorty.url},
        ]  # fmt: skip
        cfg = {
            "backends": backends,
            # Statuses are under test here: no keep-alive opens a stream before its error.
            "agents": {"keepalive": 0},
            "routing": {
                "cooldown": {"failures": 2, "seconds": 1, "max_seconds": 4},
                "health": {"interval": 1, "timeout": 2},
                "backoff": 0.05,
                "backoff_max": 0.2,
                "models": {
                    "chain-model:1b": {"fallbacks": [UPSTREAM_MODEL]},
                    "slow-model": {"fallbacks": [LLAMACPP_MODEL]},
                    "short:135m": {"context_fallbacks": [LLAMACPP_MODEL]},
                    "dist-weighted": {"strategy": "weighted", "deployments": {"w1": {"weight": 3}}},
                    "dist-priority": {"strategy": "priority",
                                      "deployments": {"w2": {"priority": -1}}},
                    "dist-latency": {"strategy": "latency"},
                    "busy-model": {"strategy": "priority"},
                },
            },
        }  # fmt: skip
        with running(start_gateway(tmp, cfg, name="routed")) as gw:
            yield Routed(gw, stubs)
    for srv in servers.values():
        srv.stop()


def _openai(url: str, **kw: Any) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{url}/v1", api_key="x", max_retries=0, timeout=60, **kw)


def _chat(client: httpx.Client, model: str) -> httpx.Response:
    return client.post("/v1/chat/completions", json={"model": model, "messages": MSG})


@pytest.mark.parametrize("code", [429, 503])
def test_a_failing_backend_cools_down_and_comes_back_on_its_own(routed: Routed, code: int) -> None:
    flaky, steady = routed.stubs["flaky"], routed.stubs["steady"]
    url = routed.gw.url
    wait_for(lambda: deployment(url, "flaky")["state"] == "ok", 60, "flaky to be ok")
    flaky.status = code
    flaky.retry_after = "2" if code == 429 else None
    try:
        with httpx.Client(base_url=url, timeout=30) as c:
            before = flaky.failed
            for _ in range(6):
                r = _chat(c, "flaky-model")
                assert r.status_code == 200, r.text  # retried on the steady one
                assert r.headers["x-aistack-backend"] == "steady"
            # A 429 takes it out at once; 503s after two in a row (cooldown.failures).
            assert flaky.failed - before == (1 if code == 429 else 2)
            d = deployment(url, "flaky")
            assert d["state"] == "cooldown" and f"stub says {code}" in d["last_error"]
            # While it cools down nothing more is sent there.
            sent = flaky.total()
            for _ in range(3):
                assert _chat(c, "flaky-model").headers["x-aistack-backend"] == "steady"
            assert flaky.total() == sent
            flaky.status = 200
            # Once the cooldown is over one trial request goes there, and it is back.
            wait_for(
                lambda: _chat(c, "flaky-model").headers["x-aistack-backend"] == "flaky",
                60,
                "flaky to answer again",
            )
        d = deployment(url, "flaky")
        assert d["state"] == "ok" and d["consecutive_failures"] == 0
        assert steady.total() > 0
    finally:
        flaky.status = 200


def test_a_backend_slow_to_its_first_byte_is_skipped_for_the_next_in_the_chain(
    routed: Routed,
) -> None:
    # The stub holds its first byte for as long as the client waits (240 s): only the
    # gateway's first-token timeout (0.5 s) can move the request on, so an answer from
    # the fallback shows that it fired, without a clock; the client's deadline is
    # generous because llama.cpp's server answers one request at a time, on a busy box.
    client = openai.OpenAI(base_url=f"{routed.gw.url}/v1", api_key="x", max_retries=0,
                           timeout=240)  # fmt: skip
    raw = client.chat.completions.with_raw_response.create(
        model="slow-model",
        messages=MSG,  # type: ignore[arg-type]
        max_tokens=5,
    )
    answer = raw.parse()
    assert answer.model == LLAMACPP_MODEL  # the model that actually answered
    assert raw.headers["x-aistack-model"] == LLAMACPP_MODEL
    assert raw.headers["x-aistack-backend"] == "llamacpp"
    assert int(raw.headers["x-aistack-attempts"]) >= 2
    assert routed.stubs["slow"].total() >= 1
    assert "timed out" in deployment(routed.gw.url, "slow")["last_error"]
    # Through the Ollama dialect too: the fallback answers, the name asked for is echoed.
    r = ollama.Client(host=routed.gw.url, timeout=60).chat(
        "slow-model", messages=MSG, options={"num_predict": 5}
    )
    assert r.model == "slow-model" and r.done


def test_a_chain_whose_first_pool_is_down_is_answered_by_its_next_entry(routed: Routed) -> None:
    url = routed.gw.url
    raw = _openai(url).chat.completions.with_raw_response.create(
        model="chain-model:1b",
        messages=MSG,  # type: ignore[arg-type]
        max_tokens=5,
    )
    assert raw.parse().model == UPSTREAM_MODEL
    assert raw.headers["x-aistack-backend"] == "upstream"
    stream = ollama.Client(host=url, timeout=60).chat(
        "chain-model:1b", messages=MSG, stream=True, options={"num_predict": 5}
    )
    parts = list(stream)
    assert parts[-1].done and all(p.model == "chain-model:1b" for p in parts)
    # Once the probes have found both dead, the fallback is called first, with no waste.
    wait_for(
        lambda: all(deployment(url, b)["state"] == "down" for b in ("dead1", "dead2")),
        60,
        "the probes to mark the dead backends down",
    )
    with httpx.Client(base_url=url, timeout=60) as c:
        r = c.post(
            "/api/chat",
            json={"model": "chain-model:1b", "messages": MSG, "stream": False,
                  "options": {"num_predict": 3}},
        )  # fmt: skip
    assert r.status_code == 200, r.text
    assert r.headers["x-aistack-model"] == UPSTREAM_MODEL
    assert "x-aistack-attempts" not in r.headers
    d = deployment(url, "dead1")
    assert d["in_flight"] == 0 and "unreachable" in (d["last_error"] or health_error(url, "dead1"))


def health_error(url: str, backend: str) -> str:
    for b in health(url)["backends"]:
        if b["name"] == backend:
            return str(b["error"])
    return ""


def test_a_prompt_too_long_for_the_model_goes_to_its_context_fallback(routed: Routed) -> None:
    url = routed.gw.url
    client = _openai(url)
    short = client.chat.completions.with_raw_response.create(
        model="short:135m",
        messages=MSG,  # type: ignore[arg-type]
        max_tokens=3,
    )
    assert short.headers["x-aistack-backend"] == "shorty"
    long_prompt = "Summarise this. " + "The quick brown fox jumps over the lazy dog. " * 60
    raw = client.chat.completions.with_raw_response.create(
        model="short:135m",
        messages=[{"role": "user", "content": long_prompt}],
        max_tokens=3,
    )
    assert raw.parse().model == LLAMACPP_MODEL
    assert raw.headers["x-aistack-backend"] == "llamacpp"
    # Too long is the prompt's fault, not the backend's: no cooldown for shorty.
    d = deployment(url, "shorty")
    assert d["state"] == "ok" and d["consecutive_failures"] == 0
    # Without a context fallback the caller gets the 400.
    with pytest.raises(openai.BadRequestError) as e:
        client.chat.completions.create(
            model=UPSTREAM_MODEL,
            messages=[{"role": "user", "content": long_prompt * 8}],
            max_tokens=3,
        )
    assert "context length" in str(e.value)


LONG_PROMPT = "Summarise this. " + "The quick brown fox jumps over the lazy dog. " * 60


def _anthropic_long(url: str, model: str, prompt: str) -> str:
    c = anthropic.Anthropic(base_url=url, api_key="x", max_retries=0, timeout=120)
    msgs: Any = [{"role": "user", "content": prompt}]
    raw = c.messages.with_raw_response.create(model=model, max_tokens=3, messages=msgs)
    assert raw.parse().content
    return str(raw.headers["x-aistack-backend"])


def _responses_long(url: str, model: str, prompt: str) -> str:
    raw = _openai(url).responses.with_raw_response.create(
        model=model, input=prompt, max_output_tokens=3
    )
    assert raw.parse().output
    return str(raw.headers["x-aistack-backend"])


def _anthropic_stream(url: str, model: str, prompt: str) -> str:
    c = anthropic.Anthropic(base_url=url, api_key="x", max_retries=0, timeout=120)
    msgs: Any = [{"role": "user", "content": prompt}]
    with pytest.raises(anthropic.BadRequestError) as e:  # raised on opening the stream
        c.messages.create(model=model, max_tokens=3, messages=msgs, stream=True)
    return str(e.value.message)


def _responses_stream(url: str, model: str, prompt: str) -> str:
    with pytest.raises(openai.BadRequestError) as e:
        _openai(url).responses.create(model=model, input=prompt, stream=True)
    return str(e.value.message)


@pytest.mark.parametrize(
    ("whole", "streamed"),
    [(_anthropic_long, _anthropic_stream), (_responses_long, _responses_stream)],
    ids=["anthropic", "responses"],
)
def test_the_agents_dialects_get_the_context_fallback_or_a_400_naming_the_context(
    routed: Routed,
    whole: Any,
    streamed: Any,
) -> None:
    url = routed.gw.url
    # llama.cpp's server answers one request at a time, its health probe included: after
    # the test before's long prompt, this gateway's 2 s probe may have found it busy.
    wait_for(lambda: deployment(url, "llamacpp")["state"] == "ok", 60, "llamacpp to be up")
    # Too long for shorty's 256 tokens: its context fallback answers.
    assert whole(url, "short:135m", LONG_PROMPT) == "llamacpp"
    # No fallback: a 400 (which the agents show and do not retry), with the context size,
    # before the stream opens, as Claude Code and Codex always stream.
    message = streamed(url, UPSTREAM_MODEL, LONG_PROMPT * 8)
    assert "exceeds the context length (4096 tokens)" in message


def test_requests_spread_across_a_pool_as_each_strategy_defines(routed: Routed) -> None:
    s = routed.stubs
    with httpx.Client(base_url=routed.gw.url, timeout=30) as c:
        for model, n in (("dist-least", 200), ("dist-weighted", 200), ("dist-priority", 100)):
            for _ in range(n):
                assert _chat(c, model).status_code == 200
        for _ in range(100):
            assert _chat(c, "dist-latency").status_code == 200
    w1, w2 = s["w1"].chats, s["w2"].chats
    # least-in-flight, one request at a time: in turn
    assert abs(w1["dist-least"] - 100) <= 2 and w1["dist-least"] + w2["dist-least"] == 200
    # weighted 3:1
    assert abs(w1["dist-weighted"] - 150) <= 3 and w2["dist-weighted"] == 200 - w1["dist-weighted"]
    # priority: w2 ranks first
    assert w2["dist-priority"] == 100 and "dist-priority" not in w1
    # latency: each is measured once, then the faster takes everything
    assert s["laggy"].chats["dist-latency"] <= 2
    assert s["fast"].chats["dist-latency"] >= 98


def test_a_deployment_at_its_cap_overflows_to_the_next(routed: Routed) -> None:
    capped, overflow = routed.stubs["capped"], routed.stubs["overflow"]
    with httpx.Client(base_url=routed.gw.url, timeout=30) as c:
        # One at a time, the first-ranked deployment takes everything.
        for _ in range(2):
            assert _chat(c, "busy-model").headers["x-aistack-backend"] == "capped"
        assert overflow.total() == 0

        # Four at once: it takes one (max_in_flight: 1); the rest overflow.
        def one(_: int) -> str:
            return str(_chat(c, "busy-model").headers["x-aistack-backend"])

        with ThreadPoolExecutor(4) as pool:
            got = list(pool.map(one, range(4)))
    assert capped.peak == 1
    assert got.count("capped") >= 1 and got.count("overflow") >= 2, got
    assert deployment(routed.gw.url, "capped")["max_in_flight"] == 1


def test_health_reports_every_deployment_and_probes_for_orchestrators(routed: Routed) -> None:
    url = routed.gw.url
    assert httpx.get(f"{url}/health/live").json() == {"status": "ok"}
    ready = httpx.get(f"{url}/health/ready")
    assert ready.status_code == 200 and ready.json()["status"] == "ready"
    h = health(url)
    backends = {b["name"]: b for b in h["backends"]}
    assert backends["upstream"]["state"] == "up" and backends["upstream"]["latency_ms"] > 0
    wait_for(lambda: health_error(url, "dead1") != "", 60, "a probe of dead1")
    assert "unreachable" in health_error(url, "dead1")
    d = deployment(url, "llamacpp")
    assert d["upstream_model"] == LLAMACPP_MODEL
    assert {"state", "in_flight", "last_error", "ttft_ms", "cooldown_remaining_s"} <= set(d)
    assert h["status"] == "degraded"  # the dead ones


def test_a_gateway_whose_only_backend_is_down_is_live_but_not_ready(
    tmp_path: Path,
) -> None:
    cfg = {
        "backends": [
            {"name": "gone", "kind": "ollama", "url": f"http://127.0.0.1:{free_port()}",
             "models": ["gone:1b"], "discover": False}
        ],
        "routing": {"health": {"interval": 1}},
    }  # fmt: skip
    with running(start_gateway(tmp_path, cfg, name="lonely")) as gw:
        assert httpx.get(f"{gw.url}/health/live").status_code == 200
        wait_for(lambda: httpx.get(f"{gw.url}/health/ready").status_code == 503, 60, "not ready")
        assert httpx.get(f"{gw.url}/health/ready").json() == {
            "status": "not ready",
            "reason": "every backend is down",
        }
        # A request fails fast, says why, and keeps the status of the cause (502): it is
        # not even tried (no connect, no retries, no backoff), which its message shows
        # without a clock.
        with pytest.raises(ollama.ResponseError) as e:
            ollama.Client(host=gw.url, timeout=60).chat("gone:1b", messages=MSG)
        assert e.value.status_code == 502 and "unreachable" in e.value.error
        assert "no deployment of 'gone:1b' is available" in e.value.error
