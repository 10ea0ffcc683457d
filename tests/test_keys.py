"""Keys, specs, prices, the auth modes and the config that sets them up."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import ollama
import openai
import pytest

from aistack.access.gate import KeyInfo, new_record
from aistack.access.keys import (
    PREFIX,
    SpecError,
    digest,
    parse_budget,
    parse_duration,
    parse_expiry,
)
from aistack.access.pricing import Price, Prices
from aistack.cli.serve import is_loopback, refuse_open_bind
from aistack.config import ConfigError, parse
from aistack.core.events import Usage
from tests.faults import FaultServer, openai_canned
from tests.procs import Proc, create_key, running, start_gateway, write_config

CHAT = [{"role": "user", "content": "hi"}]


def test_a_key_is_256_random_bits_stored_only_as_its_hash() -> None:
    new, rec = new_record("paperless", models=["gpt-oss:*"], rpm=60)
    assert new.key.startswith(PREFIX) and len(new.key) == len(PREFIX) + 43
    assert rec.hash == digest(new.key).hex() and new.key not in repr(rec)
    assert rec.hint == f"{PREFIX}…{new.key[-4:]}"
    other, _ = new_record("paperless")
    assert other.key != new.key
    with pytest.raises(ValueError, match="key name"):
        new_record("has space")
    with pytest.raises(ValueError, match="rpm must be a positive"):
        new_record("x", rpm=0)


@pytest.mark.parametrize(
    ("text", "expected"),
    [("5/month", (5.0, "month")), ("$0.50/day", (0.5, "day")), ("20 per week", (20.0, "week"))],
)
def test_budgets_read_as_amount_per_period(text: str, expected: tuple[float, str]) -> None:
    assert parse_budget(text) == expected


def test_specs_that_cannot_be_read_say_how_to_write_them() -> None:
    with pytest.raises(SpecError, match="AMOUNT/PERIOD"):
        parse_budget("5/fortnight")
    with pytest.raises(SpecError, match=r"e\.g\. 90d"):
        parse_duration("90 days")
    with pytest.raises(SpecError, match="a date"):
        parse_expiry("someday")
    assert parse_duration("90d") == 90 * 86400
    assert parse_expiry("1h", now=1000.0) == (1000 + 3600) * 1000
    assert parse_expiry("2026-12-31") == parse_expiry("2026-12-31T00:00:00Z")


@pytest.mark.parametrize(
    ("globs", "model", "allowed"),
    [
        (("gpt-oss:*",), "gpt-oss:20b", True),
        (("gpt-oss:*",), "GPT-OSS:120b", True),
        (("gpt-oss:*",), "qwen3:8b", False),
        (("gpt-oss",), "gpt-oss", True),  # gpt-oss means gpt-oss:latest
        (("gpt-oss",), "gpt-oss:20b", False),
        (("openrouter/*",), "openrouter/anthropic/claude", True),
        (("qwen3*", "llama3.2:1b"), "llama3.2:1b", True),
        ((), "anything", True),
    ],
)
def test_model_allowlists_are_globs_on_canonical_names(
    globs: tuple[str, ...], model: str, allowed: bool
) -> None:
    _, rec = new_record("k", models=globs)
    assert KeyInfo(rec).allows(model, {}) is allowed


def test_an_alias_is_allowed_when_it_or_its_target_matches() -> None:
    _, rec = new_record("k", models=["gpt-oss:*"])
    assert KeyInfo(rec).allows("reason", {"reason:latest": "gpt-oss:20b"})
    assert not KeyInfo(rec).allows("reason", {})


def test_costs_come_from_the_backend_the_price_table_or_a_local_rate() -> None:
    prices = Prices(
        {"gpt-4o": Price(2.5, 10.0), "openrouter/*": Price(1.0, 1.0), "llama*": Price(0.1, 0.1)},
        {"cloud": "metered", "openrouter": "metered", "house": "local"},
    )
    u = Usage(prompt_tokens=1_000_000, completion_tokens=100_000)
    assert prices.cost("cloud", "gpt-4o", "gpt-4o", u) == (3.5, "price")
    assert prices.cost("openrouter", "x/y", "y", u) == (1.1, "price")  # backend/model glob
    reported = Usage(prompt_tokens=10, completion_tokens=1, cost=0.25)
    assert prices.cost("openrouter", "x/y", "y", reported) == (0.25, "backend")
    assert prices.cost("house", "qwen3:8b", "qwen3:8b", u) == (0.0, "local")
    assert prices.cost("house", "llama3.2:1b", "llama3.2:1b", u)[1] == "price"  # a set rate
    assert prices.cost("cloud", "mystery", "mystery", u) == (None, "unknown")  # never $0
    # Claude models are priced out of the box (the table ships with the package).
    claude = prices.cost("claude", "claude-sonnet-4-5-20250929", "sonnet", u)
    assert claude == (
        pytest.approx((u.prompt_tokens * 3 + u.completion_tokens * 15) / 1e6),
        "price",
    )
    assert prices.price_for("claude", "claude-opus-4-1", "opus") == Price(15.0, 75.0)
    assert prices.cost("", "", "gpt-4o", None) == (0.0, "")  # never reached a backend


def test_binding_beyond_loopback_needs_a_master_key_or_an_explicit_choice() -> None:
    assert is_loopback("127.0.0.1") and is_loopback("::1") and is_loopback("localhost")
    assert not is_loopback("0.0.0.0") and not is_loopback("box.lan")
    bare = "server: {host: 0.0.0.0}"
    reason = refuse_open_bind(parse(bare, "f.yaml"))
    assert reason is not None and "auth.master_key" in reason and "auth.open" in reason
    assert refuse_open_bind(parse(bare + "\nauth: {master_key: " + "k" * 16 + "}", "f")) is None
    assert refuse_open_bind(parse(bare + "\nauth: {open: false}", "f")) is None
    assert refuse_open_bind(parse("server: {host: 127.0.0.1}", "f")) is None


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("auth: {master_key: short}", "auth.master_key: too short"),
        ("auth: {trusted_proxies: [10.0.0.0/33]}", "auth.trusted_proxies[0]: '10.0.0.0/33'"),
        ("auth: {opne: true}", "auth: object contains unknown field 'opne'"),
        ("database_url: mysql://x/y", "database_url: use a SQLite path"),
        ("redis_url: localhost:6379", "redis_url: use redis://"),
        ("ledger: {flush_interval: 0}", "ledger.flush_interval: must be more than 0"),
        ("limits: {on_redis_error: ignore}", "limits.on_redis_error: "),
        ("prices: {gpt-4o: {input: -1}}", "prices.gpt-4o: prices cannot be negative"),
        ("backends: [{name: a, kind: local, billing: free}]", "backends[0].billing: "),
    ],
)
def test_access_config_errors_name_the_key(text: str, message: str) -> None:
    with pytest.raises(ConfigError, match="^f.yaml: " + message.replace("[", r"\[")):
        parse(text, "f.yaml")


def test_an_empty_master_key_from_the_environment_means_none() -> None:
    cfg = parse("auth: {master_key: '${K:-}'}", "f.yaml", env={})
    assert cfg.auth.master_key is None


@pytest.fixture(scope="module")
def backend() -> Iterator[FaultServer]:
    fs = FaultServer(openai_canned()).start()
    yield fs
    fs.stop()


@pytest.fixture(scope="module")
def open_gw(tmp_path_factory: pytest.TempPathFactory, backend: FaultServer) -> Iterator[Proc]:
    tmp = tmp_path_factory.mktemp("open")
    cfg = {"backends": [{"name": "fake", "kind": "openai", "url": f"{backend.url}/v1"}]}
    with running(start_gateway(tmp, cfg)) as gw:
        yield gw


def test_with_no_keys_on_loopback_it_is_open_and_says_so(open_gw: Proc) -> None:
    assert "auth: OPEN" in open_gw.output()
    assert ollama.Client(open_gw.url).chat(model="canned", messages=CHAT).message.content == "ok"
    # SDKs insist on a key; an open gateway ignores a placeholder.
    client = openai.OpenAI(base_url=f"{open_gw.url}/v1", api_key="ollama", max_retries=0)
    assert client.chat.completions.create(model="canned", messages=CHAT).choices  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "headers",
    [
        {"X-Forwarded-For": "203.0.113.9"},
        {"Forwarded": "for=203.0.113.9"},
        {"X-Real-IP": "203.0.113.9"},
        {"X-Forwarded-Host": "ai.example.org"},
        {"Via": "1.1 proxy"},
        # DNS rebinding: a web page whose own name now resolves to 127.0.0.1 sends it.
        {"Host": "evil.example"},
        {"Host": "evil.example:8434"},
        {"Host": "127.0.0.1.evil.example"},
    ],
    ids=lambda h: next(iter(h.items()))[0] + "=" + next(iter(h.items()))[1],
)
def test_implicitly_open_serves_only_local_callers_by_a_loopback_name(
    open_gw: Proc, headers: dict[str, str]
) -> None:
    body = {"model": "canned", "messages": CHAT, "stream": False}
    r = httpx.post(f"{open_gw.url}/api/chat", json=body, headers=headers)
    assert r.status_code == 401
    assert "serves local callers only" in r.json()["error"]
    o = httpx.post(f"{open_gw.url}/v1/chat/completions", json=body, headers=headers)
    assert o.status_code == 401 and o.json()["error"]["code"] == "invalid_api_key"


@pytest.mark.parametrize("host", ["localhost", "LOCALHOST:8434", "app.localhost", "[::1]:80"])
def test_implicitly_open_serves_loopback_names(open_gw: Proc, host: str) -> None:
    body = {"model": "canned", "messages": CHAT, "stream": False}
    r = httpx.post(f"{open_gw.url}/api/chat", json=body, headers={"Host": host})
    assert r.status_code == 200, r.text


def test_explicitly_open_serves_anyone_and_still_honours_known_keys(
    tmp_path: Path, backend: FaultServer
) -> None:
    cfg: dict[str, object] = {
        "backends": [{"name": "fake", "kind": "openai", "url": f"{backend.url}/v1"}],
        "database_url": str(tmp_path / "k.db"),
        "auth": {"open": True, "trusted_proxies": ["127.0.0.1/32"], "admin_groups": ["ai-admins"]},
    }
    config = write_config(tmp_path / "cli", cfg)
    key = create_key(config, "--name", "home-assistant", "--rpm", "1")
    with running(start_gateway(tmp_path, cfg)) as gw:
        assert "auth: open (auth.open: true)" in gw.output()
        proxied = {"X-Forwarded-For": "203.0.113.9"}
        for _ in range(3):  # no key: no limits
            ollama.Client(gw.url, headers=proxied).chat(model="canned", messages=CHAT)
        keyed = ollama.Client(gw.url, headers={"Authorization": f"Bearer {key}"})
        keyed.chat(model="canned", messages=CHAT)
        with pytest.raises(ollama.ResponseError) as e:
            keyed.chat(model="canned", messages=CHAT)  # the key's rpm still applies
        assert e.value.status_code == 429
        # Forward auth from a trusted proxy (this test is 127.0.0.1): by group.
        admin = {"X-authentik-username": "akadmin", "X-authentik-groups": "users|ai-admins"}
        r = httpx.get(f"{gw.url}/admin/api/status", headers=admin)
        assert r.status_code == 200 and r.json()["auth"]["mode"] == "open"
        user = {"X-authentik-username": "bob", "X-authentik-groups": "users"}
        assert httpx.get(f"{gw.url}/admin/api/status", headers=user).status_code == 401
