"""The route table: a route's declaration is all the app needs, and every path finds its entry.

The first test builds an app in this process with one extra route in its table (a
handler whose name means nothing) and sees the request authenticated, limited,
recorded, counted and traced, all from the entry: the real gate on SQLite, the
embedded model, metrics, and spans posted to a small local OTLP receiver.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from aistack.backends.registry import build
from aistack.backends.transport import HttpClient
from aistack.cli.serve import build_gate
from aistack.config import Loaded, parse
from aistack.core.operations import Operation
from aistack.http import openai_routes, routes
from aistack.http.app import App
from aistack.http.asgi import Request, respond_json
from aistack.http.table import ADMIN, GET, KEY, POST, PUBLIC, Mount, Route, RouteTable, flatten
from aistack.observability import Observability
from aistack.service import Gateway, RequestContext
from tests import faults
from tests.conftest import LOCAL_MODEL
from tests.test_observability import Receiver, attrs


@pytest.fixture
def receiver() -> Iterator[tuple[Receiver, str]]:
    r = Receiver()
    srv = faults.FaultServer(r).start()
    try:
        yield r, srv.url
    finally:
        srv.stop()


async def whatever_it_is_called(gw: Gateway, req: Request, ctx: RequestContext) -> None:
    """A new route's handler: OpenAI's chat, under a name no list knows."""
    await openai_routes.chat_completions(gw, req, ctx)


def test_a_route_declared_in_the_table_is_authenticated_limited_recorded_counted_and_traced(
    tmp_path: Path, receiver: tuple[Receiver, str]
) -> None:
    received, otlp = receiver
    cfg = parse(
        json.dumps(
            {
                "database_url": f"sqlite:///{tmp_path}/aistack.db",
                "auth": {"master_key": "sk-routes-master-0123456789"},
                "backends": [{"name": "local", "kind": "local", "n_threads": 1}],
                "ledger": {"flush_interval": 0.05},
            }
        ),
        "test",
    )
    extra = Route(
        POST, "/v2/talk", whatever_it_is_called, "openai", KEY, Operation.CHAT, name="talk"
    )

    async def go() -> None:
        client = HttpClient()
        gate = build_gate(Loaded(cfg, "test"), migrate=True)
        gw = Gateway(cfg, build(cfg.backends, client), client, gate)
        obs = Observability(cfg, gw, env={"OTEL_EXPORTER_OTLP_ENDPOINT": otlp})
        app = App(gw, obs, [*routes.table(obs), extra])
        assert await app.startup() is None
        try:
            from aistack.access.gate import new_record

            new, rec = new_record("talker", rpm=1)
            await gate.create_key(rec)
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(transport=transport, base_url="http://gw") as c:
                body = {"model": LOCAL_MODEL, "max_tokens": 4,
                        "messages": [{"role": "user", "content": "Hi"}]}  # fmt: skip
                # Authenticated: KEY access, with the OpenAI error shape it declared.
                anon = await c.post("/v2/talk", json=body)
                assert anon.status_code == 401
                assert anon.json()["error"]["code"] == "invalid_api_key"
                auth = {"Authorization": f"Bearer {new.key}"}
                ok = await c.post("/v2/talk", json=body, headers=auth)
                assert ok.status_code == 200, ok.text
                assert ok.json()["choices"][0]["message"]["role"] == "assistant"
                # Limited: the key's one request a minute is spent.
                again = await c.post("/v2/talk", json=body, headers=auth)
                assert again.status_code == 429
                assert again.json()["error"]["code"] == "rate_limit_exceeded"
            # Recorded: the ledger has the answered request, under the route's name.
            await gate.ledger.flush()
            rows = await gate.store.run(lambda: gate.store.requests(limit=10))
            (row,) = [r for r in rows if r.status == 200]
            assert (row.route, row.app, row.model) == ("talk", "talker", LOCAL_MODEL)
            assert row.tokens_out > 0
            # Counted: requests by route and status, and the model request's duration.
            assert obs.metrics is not None
            text = obs.metrics.expose()
            assert 'aistack_requests_total{dialect="openai",route="talk"' in text
            assert 'aistack_request_duration_seconds_count{dialect="openai",route="talk"' in text
            # Traced: a SERVER span for the chat, and the span of the answering call.
            assert obs.tracer is not None
            await obs.tracer.export()
            spans = received.spans()
            server = [attrs(s) for s in spans if s["kind"] == 2]
            assert [(a["gen_ai.operation.name"], a["url.path"]) for a in server] == [
                ("chat", "/v2/talk"),
                ("chat", "/v2/talk"),  # the refused one is traced too, with its status
            ]
            assert sorted(a["http.response.status_code"] for a in server) == [200, 429]
            assert any(s["kind"] == 3 for s in spans)
        finally:
            await app.shutdown()

    asyncio.run(go())


# -- finding the entry for a path


async def _h(gw: Gateway, req: Request, ctx: RequestContext) -> None:
    await respond_json(req, {"params": dict(req.params)})


def _table() -> RouteTable:
    r = "qdrant"
    return RouteTable(
        [
            *routes.table(),
            Route(GET, "/v1/images/jobs/{id}/events", _h, "openai", KEY, name="events"),
            Route(GET, "/v1/images/files/{id}", _h, "openai", KEY, name="file"),
            Mount(
                "/qdrant",
                (
                    Route(GET, "/", _h, r, KEY, name="q_root"),
                    Route(
                        POST,
                        "/collections/{name}/points/search",
                        _h,
                        r,
                        KEY,
                        Operation.VECTOR,
                        name="search",
                    ),
                    Route(GET, "/{rest:path}", _h, r, KEY, name="q_rest"),
                ),
                "qdrant",
            ),
        ]
    )


@pytest.mark.parametrize(
    ("path", "method", "name", "params", "matched"),
    [
        ("/api/chat", "POST", "chat", {}, "/api/chat"),
        ("//api/chat", "POST", "chat", {}, "/api/chat"),
        ("/v1/chat/completions/", "POST", "chat_completions", {}, "/v1/chat/completions"),
        ("/v1/messages", "POST", "messages", {}, "/v1/messages"),
        ("/api/tags", "HEAD", "tags", {}, "/api/tags"),
        ("/v1/models/qwen3:8b", "GET", "model", {"id": "qwen3:8b"}, None),
        # A model name may hold slashes: the rest of the path is the id.
        ("/v1/models/openai/gpt-oss-20b", "GET", "model", {"id": "openai/gpt-oss-20b"}, None),
        ("/admin/api/keys/k-123", "DELETE", "revoke_key", {"id": "k-123"}, None),
        ("/v1/responses/resp_1", "GET", "response", {"id": "resp_1"}, None),
        ("/v1/responses/resp_1/input_items", "GET", "input_items", {"id": "resp_1"}, None),
        ("/v1/messages/count_tokens", "POST", "count_tokens", {}, None),
        ("/v1/images/jobs/j1/events", "GET", "events", {"id": "j1"}, None),
        ("/v1/images/files/f.png", "GET", "file", {"id": "f.png"}, None),
        ("/qdrant", "GET", "q_root", {}, None),
        ("/qdrant/collections/docs/points/search", "POST", "search", {"name": "docs"}, None),
        ("/qdrant/collections/docs", "GET", "q_rest", {"rest": "collections/docs"}, None),
    ],
)
def test_a_path_finds_its_entry(
    path: str, method: str, name: str, params: dict[str, str], matched: str | None
) -> None:
    methods, at, got = _table().find(path)
    assert methods is not None and methods[method].name == name
    assert dict(got) == params
    assert at == (matched or path)


@pytest.mark.parametrize(
    ("path", "dialect"),
    [
        ("/api/nope", "ollama"),
        ("/v1/nope", "openai"),
        ("/admin/api/nope", "plain"),
        ("/qdrant/", "qdrant"),
        ("/admin/api/keys/a/b", "plain"),
        ("/v1/models/", "openai"),
        ("/v1/messages/nope", "anthropic"),
    ],
)
def test_a_path_no_entry_matches_gets_the_404_of_its_prefix(path: str, dialect: str) -> None:
    t = _table()
    methods, at, _ = t.find(path)
    if methods is not None:  # /qdrant/ is the mount's root; /v1/models/ is the list
        assert at in ("/qdrant", "/v1/models")
        return
    assert t.dialect_of(at) == dialect


def test_the_hot_paths_are_one_dictionary_lookup() -> None:
    """(The query string never reaches the table: test_server.py sends one.)"""
    t = _table()
    for r in [*routes.OLLAMA, *routes.OPENAI]:
        if r.fixed:
            assert t.fixed[r.path][r.methods[0]] is r
    methods, _, _ = t.find("/v1/messages")
    assert methods is t.fixed["/v1/messages"]


def test_a_table_refuses_a_route_declared_twice_or_a_parameter_in_the_middle() -> None:
    dup = Route(POST, "/api/chat", _h, "ollama", KEY)
    with pytest.raises(ValueError, match="declared twice"):
        RouteTable([*routes.table(), dup])
    with pytest.raises(ValueError, match="must come last"):
        RouteTable([Route(GET, "/a/{rest:path}/b", _h, "plain", PUBLIC)])
    with pytest.raises(ValueError, match="whole segment"):
        RouteTable([Route(GET, "/a/x{id}", _h, "plain", PUBLIC)])


def test_every_gateway_route_says_who_may_call_it_and_what_it_does() -> None:
    by_name: dict[str, Any] = {r.name: r for r in flatten(routes.table())}
    # What the ledger meters is exactly the model work.
    metered = {n for n, r in by_name.items() if r.operation is not Operation.NONE}
    assert metered == {"chat", "generate", "embed", "embeddings", "chat_completions",
                       "completions", "messages", "responses"}  # fmt: skip
    assert {n for n, r in by_name.items() if r.access is PUBLIC} == {
        "root", "version", "health", "live", "ready",
    }  # fmt: skip
    assert all(r.access is ADMIN for r in by_name.values() if r.path.startswith("/admin/"))
    # Model management: keys with the `models` scope (Open WebUI's), admins, and an open
    # gateway's local callers; nothing else names a scope.
    scoped = {n: r.scope for n, r in by_name.items() if r.scope}
    assert scoped == {"pull": "models", "delete": "models", "copy": "models"}
    assert all(by_name[n].access is KEY for n in scoped)
