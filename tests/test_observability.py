"""Metrics, traces and request logs, checked against the traffic that made them.

A small local OTLP receiver stands in for a collector or Langfuse (it only records what
it is sent); everything else is real: the gateway process, the embedded model, the
official clients.
"""

from __future__ import annotations

import asyncio
import base64
import json
import re
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import anthropic
import httpx
import ollama
import openai
import pytest

from tests import faults
from tests.conftest import LOCAL_MODEL
from tests.procs import Proc, free_port, running, start_gateway


@dataclass
class Receiver:
    """Records OTLP/HTTP JSON posts: their path, headers and spans."""

    posts: list[tuple[str, dict[str, str], dict[str, Any]]] = field(default_factory=list)
    sizes: list[int] = field(default_factory=list)  # body bytes of each post

    async def __call__(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, req: bytes
    ) -> None:
        head, _, body = req.partition(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        path = lines[0].split(" ")[1]
        headers = {k.lower(): v.strip() for k, _, v in (h.partition(":") for h in lines[1:])}
        self.posts.append((path, headers, json.loads(body or b"{}")))
        self.sizes.append(len(body))
        writer.write(faults.response_head(200, b"application/json", length=2) + b"{}")
        await writer.drain()

    def spans(self) -> list[dict[str, Any]]:
        return [
            s
            for _, _, body in self.posts
            for rs in body.get("resourceSpans", [])
            for ss in rs["scopeSpans"]
            for s in ss["spans"]
        ]


def attrs(span: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for a in span["attributes"]:
        v = a["value"]
        if "stringValue" in v:
            out[a["key"]] = v["stringValue"]
        elif "intValue" in v:
            out[a["key"]] = int(v["intValue"])
        elif "doubleValue" in v:
            out[a["key"]] = v["doubleValue"]
        elif "boolValue" in v:
            out[a["key"]] = v["boolValue"]
        elif "arrayValue" in v:
            out[a["key"]] = [x["stringValue"] for x in v["arrayValue"]["values"]]
    return out


def wait_for(cond: Any, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return
        time.sleep(0.1)
    raise AssertionError("condition not met in time")


_SAMPLE = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{(.*)\})? (\S+)$")


def scrape(url: str, key: str | None = None) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    text = httpx.get(f"{url}/metrics", timeout=10, headers=headers).text
    out: dict[tuple[str, frozenset[tuple[str, str]]], float] = {}
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        m = _SAMPLE.match(line)
        assert m, line
        labels = frozenset(re.findall(r'(\w+)="((?:[^"\\]|\\.)*)"', m.group(3) or ""))
        out[(m.group(1), labels)] = float(m.group(4))
    return out


def value(
    samples: dict[tuple[str, frozenset[tuple[str, str]]], float], name: str, **labels: str
) -> float:
    want = set(labels.items())
    return sum(v for (n, ls), v in samples.items() if n == name and want <= set(ls))


@dataclass
class Observed:
    gw: Proc
    receiver: Receiver
    flaky: faults.OpenAIStub


@pytest.fixture(scope="module")
def observed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Observed]:
    receiver = Receiver()
    rsrv = faults.FaultServer(receiver).start()
    flaky = faults.OpenAIStub(LOCAL_MODEL)
    flaky.status = 503
    fsrv = faults.FaultServer(flaky).start()
    cfg = {
        "backends": [
            # Asked first (priority), always fails: every request that reaches it retries.
            {"name": "flaky", "kind": "openai", "url": f"{fsrv.url}/v1", "priority": 0},
            {"name": "local", "kind": "local", "n_threads": 1, "priority": 1},
        ],
        "routing": {"strategy": "priority", "retries": 1, "cooldown": {"failures": 1000}},
        "metrics": {"ps_interval": 0.5},
        "logging": {"format": "json"},
    }
    env = {
        "OTEL_EXPORTER_OTLP_ENDPOINT": rsrv.url,
        "OTEL_SERVICE_NAME": "aistack-test",
        "OTEL_RESOURCE_ATTRIBUTES": "deployment.environment=test",
    }
    tmp = tmp_path_factory.mktemp("observed")
    with running(start_gateway(tmp, cfg, name="observed", env=env)) as gw:
        yield Observed(gw, receiver, flaky)
    rsrv.stop()
    fsrv.stop()


def test_a_streamed_chat_that_needed_a_retry_is_one_trace_with_a_span_per_attempt(
    observed: Observed,
) -> None:
    client = openai.OpenAI(base_url=f"{observed.gw.url}/v1", api_key="x", max_retries=0)
    raw = client.chat.completions.with_raw_response.create(
        model=LOCAL_MODEL,
        messages=[{"role": "user", "content": "Say hi."}],
        stream=True,
        stream_options={"include_usage": True},
        max_tokens=6,
        extra_headers={
            "traceparent": "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "x-request-id": "req-trace-1",
        },
    )
    assert raw.headers["x-request-id"] == "req-trace-1"
    chunks = list(raw.parse())
    usage = chunks[-1].usage
    assert usage is not None

    def mine() -> list[dict[str, Any]]:
        return [
            s
            for s in observed.receiver.spans()
            if s["traceId"] == "4bf92f3577b34da6a3ce929d0e0e4736"
        ]

    wait_for(lambda: len(mine()) >= 3)
    spans = mine()
    (server,) = [s for s in spans if s["kind"] == 2]
    clients = [s for s in spans if s["kind"] == 3]
    a = attrs(server)
    assert server["name"] == f"chat {LOCAL_MODEL}"
    assert server["parentSpanId"] == "00f067aa0ba902b7"  # joined the caller's trace
    assert a["gen_ai.operation.name"] == "chat"
    assert a["gen_ai.request.model"] == LOCAL_MODEL
    assert a["http.response.status_code"] == 200 and a["url.path"] == "/v1/chat/completions"
    assert a["aistack.request_id"] == "req-trace-1"
    assert a["aistack.attempts"] == 2
    failed = [s for s in clients if s["status"]["code"] == 2]
    answered = [s for s in clients if s["status"]["code"] == 1]
    assert len(failed) == 1 and len(answered) == 1
    fa, aa = attrs(failed[0]), attrs(answered[0])
    assert fa["aistack.backend"] == "flaky" and fa["http.response.status_code"] == 503
    assert fa["error.type"] == "UPSTREAM_ERROR"
    # The span of the attempt that answered is the inference span: model, usage, finish.
    assert aa["aistack.backend"] == "local" and aa["gen_ai.provider.name"] == "local"
    assert aa["gen_ai.request.model"] == LOCAL_MODEL
    assert aa["gen_ai.response.model"] == LOCAL_MODEL
    assert aa["gen_ai.usage.input_tokens"] == usage.prompt_tokens
    assert aa["gen_ai.usage.output_tokens"] == usage.completion_tokens
    assert aa["gen_ai.response.finish_reasons"] in (["stop"], ["length"])
    assert aa["gen_ai.response.time_to_first_chunk"] > 0
    assert aa["gen_ai.request.stream"] is True
    assert all(s["parentSpanId"] == server["spanId"] for s in clients)
    # The retry happened before the answer: the failed attempt ends before the answer starts.
    assert int(failed[0]["endTimeUnixNano"]) <= int(answered[0]["startTimeUnixNano"])
    assert "gen_ai.input.messages" not in a  # content capture is off by default
    path, headers, body = observed.receiver.posts[-1]
    assert path == "/v1/traces" and headers["content-type"] == "application/json"
    resource = {
        x["key"]: x["value"]["stringValue"]
        for x in body["resourceSpans"][0]["resource"]["attributes"]
    }
    assert resource["service.name"] == "aistack-test"
    assert resource["deployment.environment"] == "test"


def test_metrics_after_real_traffic_match_what_was_sent(observed: Observed) -> None:
    url = observed.gw.url
    before = scrape(url)
    oc = ollama.Client(host=url, timeout=60)
    out_tokens = in_tokens = 0
    for _ in range(3):
        r = oc.chat(
            LOCAL_MODEL, messages=[{"role": "user", "content": "Hi"}], options={"num_predict": 4}
        )
        out_tokens += r.eval_count or 0
        in_tokens += r.prompt_eval_count or 0
    client = openai.OpenAI(base_url=f"{url}/v1", api_key="x", max_retries=0)
    for _ in range(2):
        chunks = list(
            client.chat.completions.create(
                model=LOCAL_MODEL,
                messages=[{"role": "user", "content": "Hi"}],
                stream=True,
                stream_options={"include_usage": True},
                max_tokens=4,
            )
        )
        u = chunks[-1].usage
        assert u is not None
        out_tokens += u.completion_tokens
        in_tokens += u.prompt_tokens
    # The agents' dialects count like the others: their routes declare the operation.
    m = anthropic.Anthropic(base_url=url, api_key="x", max_retries=0).messages.create(
        model=LOCAL_MODEL, max_tokens=4, messages=[{"role": "user", "content": "Hi"}]
    )
    out_tokens += m.usage.output_tokens
    in_tokens += m.usage.input_tokens
    resp = client.responses.create(model=LOCAL_MODEL, input="Hi", max_output_tokens=4, store=False)
    assert resp.usage is not None
    out_tokens += resp.usage.output_tokens
    in_tokens += resp.usage.input_tokens
    with pytest.raises(ollama.ResponseError):
        oc.chat("no-such-model", messages=[{"role": "user", "content": "Hi"}])
    after = scrape(url)

    def delta(name: str, **labels: str) -> float:
        return value(after, name, **labels) - value(before, name, **labels)

    ok = {"model": LOCAL_MODEL, "backend": "local", "status": "200"}
    assert delta("aistack_requests_total", dialect="ollama", route="chat", **ok) == 3
    assert delta("aistack_requests_total", dialect="openai", route="chat_completions", **ok) == 2
    assert delta("aistack_requests_total", dialect="anthropic", route="messages", **ok) == 1
    assert delta("aistack_requests_total", dialect="openai", route="responses", **ok) == 1
    assert delta("aistack_requests_total", route="chat", model="", status="404") == 1
    assert delta("aistack_tokens_total", direction="output", model=LOCAL_MODEL) == out_tokens
    assert delta("aistack_tokens_total", direction="input", model=LOCAL_MODEL) == in_tokens
    assert delta("aistack_time_to_first_token_seconds_count", model=LOCAL_MODEL) == 7
    assert delta("aistack_request_duration_seconds_count", model=LOCAL_MODEL) == 7
    # Each of the seven was first tried on the failing deployment.
    assert delta("aistack_retries_total", model=LOCAL_MODEL) == 7
    assert delta("aistack_upstream_errors_total", backend="flaky", error="UPSTREAM_ERROR") == 7
    assert value(after, "aistack_in_flight", deployment=f"local/{LOCAL_MODEL}") == 0
    assert (
        value(after, "aistack_deployment_state", deployment=f"local/{LOCAL_MODEL}", state="ok") == 1
    )
    assert value(after, "aistack_backend_up", backend="local") == 1
    assert value(after, "aistack_info") == 1
    assert value(after, "aistack_process_resident_memory_bytes") > 10_000_000
    wait_for(lambda: value(scrape(url), "aistack_ollama_models_loaded", backend="local") == 1)
    size = value(scrape(url), "aistack_ollama_model_size_bytes", backend="local", model=LOCAL_MODEL)
    assert size > 50_000_000


def test_every_request_is_one_json_log_line_with_its_id_and_no_secret(observed: Observed) -> None:
    secret = "sk-this-must-never-be-logged-0123456789"
    r = httpx.post(
        f"{observed.gw.url}/api/generate",
        json={"model": LOCAL_MODEL, "prompt": "Hi", "stream": False, "options": {"num_predict": 3}},
        headers={"Authorization": f"Bearer {secret}", "X-Request-Id": "req-log-1"},
        timeout=60,
    )
    assert r.status_code == 200 and r.headers["x-request-id"] == "req-log-1"
    body = r.json()

    def lines_now() -> list[dict[str, Any]]:
        return [json.loads(x) for x in observed.gw.output().splitlines() if x.startswith("{")]

    # Lines are written in batches: wait for this one.
    wait_for(lambda: any(x.get("request_id") == "req-log-1" for x in lines_now()), 60)
    lines = lines_now()
    (line,) = [x for x in lines if x.get("request_id") == "req-log-1"]
    assert line["event"] == "request" and line["status"] == 200
    assert line["method"] == "POST" and line["path"] == "/api/generate"
    assert line["model"] == LOCAL_MODEL and line["backend"] == "local"
    assert (
        line["tokens_out"] == body["eval_count"] and line["tokens_in"] == body["prompt_eval_count"]
    )
    assert line["duration_ms"] > 0 and line["ttft_ms"] > 0
    assert secret not in observed.gw.output()
    assert any(x.get("logger") for x in lines)  # other records are JSON too
    generated = httpx.get(f"{observed.gw.url}/api/version").headers["x-request-id"]
    assert generated and generated != "req-log-1"


def test_with_the_receiver_down_requests_still_succeed(tmp_path: Path) -> None:
    stub = faults.OpenAIStub("stub-model")
    srv = faults.FaultServer(stub).start()
    cfg = {"backends": [{"name": "stub", "kind": "openai", "url": f"{srv.url}/v1"}]}
    env = {"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": f"http://127.0.0.1:{free_port()}/v1/traces"}
    try:
        with running(start_gateway(tmp_path, cfg, env=env)) as gw:
            client = openai.OpenAI(base_url=f"{gw.url}/v1", api_key="x", max_retries=0)
            for _ in range(50):
                r = client.chat.completions.create(
                    model="stub-model", messages=[{"role": "user", "content": "hi"}]
                )
                assert r.choices[0].message.content == "stub answer"
            wait_for(lambda: value(scrape(gw.url), "aistack_trace_spans", outcome="dropped") > 0)
            assert "trace export to" in gw.output()
    finally:
        srv.stop()


def test_trace_posts_stay_small_however_many_spans_wait(tmp_path: Path) -> None:
    # A POST goes out in one write on the event loop's thread: at most 32 KB of spans
    # each (one span alone may be larger), however many wait (docs/performance.md).
    receiver = Receiver()
    rsrv = faults.FaultServer(receiver).start()
    srv = faults.FaultServer(faults.OpenAIStub("stub-model")).start()
    cfg = {
        "backends": [{"name": "stub", "kind": "openai", "url": f"{srv.url}/v1"}],
        "tracing": {"capture_content": True},  # a 10 KB prompt makes a 10 KB span
    }
    env = {"OTEL_EXPORTER_OTLP_ENDPOINT": rsrv.url}
    try:
        with running(start_gateway(tmp_path, cfg, env=env)) as gw:
            client = openai.OpenAI(base_url=f"{gw.url}/v1", api_key="x", max_retries=0)
            for i in range(12):  # well within the exporter's 1 s round
                client.chat.completions.create(
                    model="stub-model",
                    messages=[{"role": "user", "content": f"{i} " + "x" * 10_000}],
                )
            wait_for(lambda: len(receiver.spans()) >= 24)
    finally:
        rsrv.stop()
        srv.stop()
    spans = receiver.spans()
    assert len(spans) == 24 and len({s["spanId"] for s in spans}) == 24  # each once
    assert len(receiver.posts) >= 6
    for (_, _, body), size in zip(receiver.posts, receiver.sizes, strict=True):
        n = sum(len(ss["spans"]) for rs in body["resourceSpans"] for ss in rs["scopeSpans"])
        assert size <= 33 * 1024 or n == 1, (size, n)


def test_langfuse_mode_posts_to_its_endpoint_with_usage_and_cost(tmp_path: Path) -> None:
    receiver = Receiver()
    rsrv = faults.FaultServer(receiver).start()
    srv = faults.FaultServer(faults.openai_canned(("or-model",), cost=0.0042)).start()
    cfg = {
        "backends": [{"name": "openrouter", "kind": "openai", "url": f"{srv.url}/v1"}],
        "tracing": {
            "langfuse": {"host": rsrv.url, "public_key": "pk-lf-1", "secret_key": "sk-lf-2"},
            "capture_content": True,
        },
    }
    try:
        with running(start_gateway(tmp_path, cfg)) as gw:
            client = openai.OpenAI(base_url=f"{gw.url}/v1", api_key="x", max_retries=0)
            client.chat.completions.create(
                model="or-model", messages=[{"role": "user", "content": "What is 2+2?"}]
            )
            wait_for(lambda: len(receiver.spans()) >= 2)
    finally:
        rsrv.stop()
        srv.stop()
    path, headers, _ = receiver.posts[0]
    assert path == "/api/public/otel/v1/traces"
    assert headers["authorization"] == "Basic " + base64.b64encode(b"pk-lf-1:sk-lf-2").decode()
    assert headers["x-langfuse-ingestion-version"] == "4"
    spans = receiver.spans()
    (gen,) = [s for s in spans if attrs(s).get("langfuse.observation.type") == "generation"]
    g = attrs(gen)
    assert json.loads(g["langfuse.observation.usage_details"]) == {"input": 7, "output": 3}
    assert json.loads(g["langfuse.observation.cost_details"]) == {"total": 0.0042}
    assert g["langfuse.observation.model.name"] == "or-model"
    (server,) = [s for s in spans if s["kind"] == 2]
    sa = attrs(server)
    assert json.loads(sa["gen_ai.input.messages"])[0]["parts"][0]["content"] == "What is 2+2?"
    assert json.loads(sa["gen_ai.output.messages"])[0]["parts"][0]["content"] == "ok"


def test_spend_and_budgets_show_per_app_never_per_key(tmp_path: Path) -> None:
    srv = faults.FaultServer(faults.openai_canned(("paid-model",), cost=0.25)).start()
    master = "master-key-for-metrics-test-0001"
    cfg = {
        "backends": [{"name": "cloud", "kind": "openai", "url": f"{srv.url}/v1"}],
        "auth": {"master_key": master},
    }
    try:
        with running(start_gateway(tmp_path, cfg)) as gw:
            made = httpx.post(
                f"{gw.url}/admin/api/keys",
                json={"name": "paperless", "budget": "5/month"},
                headers={"Authorization": f"Bearer {master}"},
            ).json()
            key = made["key"]
            client = openai.OpenAI(base_url=f"{gw.url}/v1", api_key=key, max_retries=0)
            for _ in range(2):
                client.chat.completions.create(
                    model="paid-model", messages=[{"role": "user", "content": "hi"}]
                )
            m = scrape(gw.url, master)
            assert (
                value(m, "aistack_spend_usd_total", model="paid-model:latest", app="paperless")
                == 0.5
            )
            assert value(m, "aistack_key_budget_usd", app="paperless") == 5
            assert value(m, "aistack_key_budget_spent_usd", app="paperless") == 0.5
            text = httpx.get(f"{gw.url}/metrics", headers={"Authorization": f"Bearer {master}"})
            assert text.status_code == 200
            assert key not in text.text and made["id"] not in text.text
    finally:
        srv.stop()


def test_the_dashboard_and_alert_rules_use_only_metrics_that_exist(
    observed: Observed, repo_root: Path
) -> None:
    text = httpx.get(f"{observed.gw.url}/metrics").text
    families = set(re.findall(r"^# TYPE (\w+) ", text, re.M))
    dashboard = json.loads((repo_root / "deploy/grafana/aistack.json").read_text())
    exprs = [t["expr"] for p in dashboard["panels"] for t in p.get("targets", [])]
    exprs.append((repo_root / "deploy/prometheus/aistack-rules.yaml").read_text())
    used = {
        re.sub(r"_(bucket|sum|count)$", "", n) for e in exprs for n in re.findall(r"aistack_\w+", e)
    }
    assert used and used <= families, used - families
