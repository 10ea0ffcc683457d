"""The gateway's route table: every route of both model APIs, health, metrics, model
management and the admin API, one entry each (the entry's shape: table.py).

Each entry says who may call it (`access`), the dialect its errors speak and the
operation it performs; the app, the limits, the ledger, metrics and tracing act on
that and on nothing else. Adding a route is one entry here (or in a room's own module,
see aistack/rooms.py) plus its handler: docs/architecture.md, "Add a route".
"""

from __future__ import annotations

from aistack.core.operations import Operation
from aistack.http import admin_routes as ad
from aistack.http import anthropic_routes as an
from aistack.http import fleet_routes as fl
from aistack.http import health_routes as hr
from aistack.http import ollama_routes as ol
from aistack.http import openai_routes as oa
from aistack.http import responses_routes as rs
from aistack.http.admin_views import AdminViews
from aistack.http.asgi import Request, respond
from aistack.http.table import (
    ADMIN,
    DELETE,
    GET,
    KEY,
    POST,
    PUBLIC,
    Entry,
    Handler,
    Mount,
    Route,
)
from aistack.observability import Observability
from aistack.service import Gateway, RequestContext

CHAT, COMPLETION, EMBED = Operation.CHAT, Operation.COMPLETION, Operation.EMBED
MODELS, METRICS = "models", "metrics"  # key scopes (access/scopes.py)

# The Ollama API (/api/*), and Ollama's model management (docs/fleet.md) for keys with
# scope `models` (Open WebUI's own key), admins, and an open gateway's local callers.
OLLAMA: tuple[Route, ...] = (
    Route(GET, "/", ol.root, "ollama", PUBLIC, name="root"),
    Route(GET, "/api/version", ol.version, "ollama", PUBLIC, name="version"),
    Route(GET, "/api/tags", ol.tags, "ollama", KEY, name="tags"),
    Route(GET, "/api/ps", ol.ps, "ollama", KEY, name="ps"),
    Route(POST, "/api/show", ol.show, "ollama", KEY, name="show"),
    Route(POST, "/api/chat", ol.chat, "ollama", KEY, CHAT, name="chat"),
    Route(POST, "/api/generate", ol.generate, "ollama", KEY, COMPLETION, name="generate"),
    Route(POST, "/api/embed", ol.embed, "ollama", KEY, EMBED, name="embed"),
    Route(POST, "/api/embeddings", ol.embeddings, "ollama", KEY, EMBED, name="embeddings"),
    Route(POST, "/api/pull", fl.pull, "ollama", KEY, name="pull", scope=MODELS),
    Route(DELETE, "/api/delete", fl.delete, "ollama", KEY, name="delete", body=True, scope=MODELS),
    Route(POST, "/api/copy", fl.copy, "ollama", KEY, name="copy", scope=MODELS),
)

# The OpenAI API (/v1/*). /v1/models answers in Anthropic's format to a caller that
# sends anthropic-version (Claude Code's model discovery).
OPENAI: tuple[Route, ...] = (
    Route(GET, "/v1/models", an.models, "openai", KEY, name="models"),
    Route(GET, "/v1/models/{id:path}", oa.model, "openai", KEY, name="model"),
    Route(POST, "/v1/chat/completions", oa.chat_completions, "openai", KEY, CHAT,
          name="chat_completions"),
    Route(POST, "/v1/completions", oa.completions, "openai", KEY, COMPLETION,
          name="completions"),
    Route(POST, "/v1/embeddings", oa.embeddings, "openai", KEY, EMBED, name="embeddings"),
)  # fmt: skip

# OpenAI's Responses API (Codex, the openai SDKs' responses calls): docs/agents.md.
RESPONSES: tuple[Route, ...] = (
    Route(POST, "/v1/responses", rs.create, "openai", KEY, CHAT, name="responses"),
    Route(GET, "/v1/responses/{id}", rs.retrieve, "openai", KEY, name="response"),
    Route(DELETE, "/v1/responses/{id}", rs.delete, "openai", KEY, name="delete_response",
          body=False),
    Route(GET, "/v1/responses/{id}/input_items", rs.input_items, "openai", KEY,
          name="input_items"),
)  # fmt: skip

# Anthropic's Messages API (Claude Code, the anthropic SDKs), whatever the query string
# (Claude Code sends ?beta=true); its 404s speak Anthropic too.
ANTHROPIC = Mount(
    "/v1/messages",
    (
        Route(POST, "/", an.messages, "anthropic", KEY, CHAT, name="messages"),
        Route(POST, "/count_tokens", an.count_tokens, "anthropic", KEY, name="count_tokens"),
    ),
    "anthropic",
)

# Health is public: orchestrators probe it without keys, and it calls no model. /health
# shows its details (backend URLs, errors) to admins and keys with scope `metrics` only,
# unless auth.public_health.
HEALTH: tuple[Route, ...] = (
    Route(GET, "/health", hr.health, "plain", PUBLIC, name="health"),
    Route(GET, "/health/live", hr.live, "plain", PUBLIC, name="live"),
    Route(GET, "/health/ready", hr.ready, "plain", PUBLIC, name="ready"),
)

# The admin API (docs/admin-api.md): keys, usage, the request log, the fleet.
ADMIN_API: tuple[Route, ...] = (
    Route(GET, "/admin/api/status", ad.status, "plain", ADMIN, name="status"),
    Route(GET, "/admin/api/keys", ad.list_keys, "plain", ADMIN, name="list_keys"),
    Route(POST, "/admin/api/keys", ad.create_key, "plain", ADMIN, name="create_key"),
    Route(
        DELETE, "/admin/api/keys/{id}", ad.revoke_key, "plain", ADMIN, name="revoke_key", body=False
    ),
    Route(GET, "/admin/api/usage", ad.usage, "plain", ADMIN, name="usage"),
    Route(GET, "/admin/api/requests", ad.requests, "plain", ADMIN, name="requests"),
    Route(GET, "/admin/api/models", fl.models, "plain", ADMIN, name="models"),
    Route(POST, "/admin/api/models/load", fl.load, "plain", ADMIN, name="model_load"),
    Route(POST, "/admin/api/models/unload", fl.unload, "plain", ADMIN, name="model_unload"),
    Route(GET, "/admin/api/sync", fl.sync_plan, "plain", ADMIN, name="sync_plan"),
    Route(POST, "/admin/api/sync", fl.sync_run, "plain", ADMIN, name="sync_run"),
)


def admin_views(views: AdminViews) -> tuple[Route, ...]:
    """The admin API's views for the console (admin_views.py)."""
    return (
        Route(GET, "/admin/api/me", views.me, "plain", ADMIN, name="me"),
        Route(GET, "/admin/api/overview", views.overview, "plain", ADMIN, name="overview"),
        Route(GET, "/admin/api/latency", views.latency, "plain", ADMIN, name="latency"),
        Route(GET, "/admin/api/snippets", views.snippets, "plain", ADMIN, name="snippets"),
        Route(GET, "/admin/api/content", views.content, "plain", ADMIN, name="content"),
    )


METRICS_TYPE = b"text/plain; version=0.0.4; charset=utf-8"


def _scrape(obs: Observability) -> Handler:
    metrics = obs.metrics
    assert metrics is not None

    async def scrape(gw: Gateway, req: Request, ctx: RequestContext) -> None:
        await respond(req, 200, (await metrics.scrape()).encode(), METRICS_TYPE)

    return scrape


def table(obs: Observability | None = None) -> list[Entry]:
    """The gateway's own routes, with what `obs` turned on (metrics, captured content)."""
    out: list[Entry] = [*OLLAMA, *OPENAI, *RESPONSES, ANTHROPIC, *HEALTH, *ADMIN_API]
    out += admin_views(AdminViews(obs.contents if obs is not None else None))
    if obs is not None and obs.metrics is not None:
        scrape = _scrape(obs)
        if obs.metrics_auth:  # an admin, or a Prometheus key with scope `metrics`
            out.append(Route(GET, "/metrics", scrape, "plain", KEY, name="metrics", scope=METRICS))
        else:
            out.append(Route(GET, "/metrics", scrape, "plain", PUBLIC, name="metrics"))
    return out
