"""Keys, limits, budgets and the ledger, driven through a real gateway by the official clients.

The backend is a canned OpenAI-compatible server (tests/faults.py) so requests are
instant; keys are made with the `aistack keys` command and the admin API, as an
operator would.
"""

from __future__ import annotations

import dataclasses
import sqlite3
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import ollama
import openai
import pytest

from aistack.access.gate import new_record
from aistack.store import open_store
from aistack.store.calendar import now_ms
from tests import procs
from tests.faults import FaultServer, openai_canned
from tests.procs import Proc, aistack_cli, running, start_gateway, write_config

MASTER = "master-" + "m" * 24
CHAT = [{"role": "user", "content": "hi"}]


@dataclass
class Keyed:
    gw: Proc
    config: Path
    db: Path
    keys: dict[str, str]  # name -> plaintext, as printed once at creation

    def ollama(self, key: str | None) -> ollama.Client:
        headers = {"Authorization": f"Bearer {key}"} if key is not None else {}
        return ollama.Client(host=self.gw.url, headers=headers)

    def openai(self, key: str) -> openai.OpenAI:
        return openai.OpenAI(base_url=f"{self.gw.url}/v1", api_key=key, max_retries=0)

    def admin(self, method: str, path: str, **kw: object) -> httpx.Response:
        headers = {"Authorization": f"Bearer {MASTER}"}
        return httpx.request(method, f"{self.gw.url}/admin/api{path}", headers=headers, **kw)  # type: ignore[arg-type]


ENV = {"TEST_MASTER_KEY": MASTER}  # the gateway and the CLI read the same config


def create_key(config: Path, *args: str) -> str:
    return procs.create_key(config, *args, env=ENV)


def plant_expired(db: Path) -> str:
    """A key whose expiry has passed (nobody can create one: expiries are in the future)."""
    new, rec = new_record("expired")
    store = open_store(str(db))
    try:
        store.migrate()
        store.create_key(dataclasses.replace(rec, expires_at=now_ms() - 60_000))
    finally:
        store.close()
    return new.key


@pytest.fixture(scope="module")
def backend() -> Iterator[FaultServer]:
    # OpenRouter-style: the backend reports each request's cost.
    fs = FaultServer(openai_canned(("canned", "other"), cost=0.02)).start()
    yield fs
    fs.stop()


@pytest.fixture(scope="module")
def keyed(tmp_path_factory: pytest.TempPathFactory, backend: FaultServer) -> Iterator[Keyed]:
    tmp = tmp_path_factory.mktemp("keyed")
    db = tmp / "ledger.db"
    cfg: dict[str, object] = {
        "server": {"log_level": "debug"},
        "backends": [{"name": "fake", "kind": "openai", "url": f"{backend.url}/v1"}],
        "database_url": str(db),
        # Keys reach the gateway by their first use (a store lookup) and by the watch of
        # the store's access stamp (0.2 s here), not by the periodic refresh.
        "auth": {"master_key": "${TEST_MASTER_KEY}", "refresh": 3600, "watch": 0.2},
        "ledger": {"flush_interval": 0.2},
    }
    config = write_config(tmp / "cli", cfg)
    keys = {
        "paperless": create_key(config, "--name", "paperless", "--models", "canned"),
        "expired": plant_expired(db),
        "revoked": create_key(config, "--name", "revoked"),
        "tight": create_key(config, "--name", "tight", "--rpm", "2"),
        "thrifty": create_key(config, "--name", "thrifty", "--budget", "0.03/day"),
    }
    out = aistack_cli("keys", "revoke", "revoked", config=config, env=ENV)
    assert out.returncode == 0, out.stderr
    with running(start_gateway(tmp, cfg, env=ENV)) as gw:
        yield Keyed(gw, config, db, keys)


WRONG = ["sk-aistack-not-a-key", "", "Bearer"]


def test_requests_without_a_key_get_401_in_each_dialect(keyed: Keyed) -> None:
    with pytest.raises(ollama.ResponseError) as e:
        keyed.ollama(None).chat(model="canned", messages=CHAT)
    assert e.value.status_code == 401
    assert "missing API key" in e.value.error
    r = httpx.post(
        f"{keyed.gw.url}/v1/chat/completions", json={"model": "canned", "messages": CHAT}
    )
    assert r.status_code == 401
    assert r.json()["error"]["type"] == "authentication_error"


@pytest.mark.parametrize("which", ["bad", "expired", "revoked"])
def test_bad_expired_and_revoked_keys_get_401_in_each_dialect(keyed: Keyed, which: str) -> None:
    key = keyed.keys.get(which, "sk-aistack-" + "x" * 43)
    with pytest.raises(ollama.ResponseError) as oe:
        keyed.ollama(key).chat(model="canned", messages=CHAT)
    assert oe.value.status_code == 401
    with pytest.raises(openai.AuthenticationError) as ae:
        keyed.openai(key).chat.completions.create(model="canned", messages=CHAT)  # type: ignore[arg-type]
    assert ae.value.status_code == 401
    expected = {"bad": "invalid API key", "expired": "has expired", "revoked": "was revoked"}
    assert expected[which] in oe.value.error
    assert expected[which] in ae.value.message
    assert key not in oe.value.error and key not in str(ae.value.body)


def test_a_good_key_works_in_both_dialects_and_x_api_key_too(keyed: Keyed) -> None:
    key = keyed.keys["paperless"]
    assert keyed.ollama(key).chat(model="canned", messages=CHAT).message.content == "ok"
    got = keyed.openai(key).chat.completions.create(model="canned", messages=CHAT)  # type: ignore[arg-type]
    assert got.choices[0].message.content == "ok"
    r = httpx.post(
        f"{keyed.gw.url}/v1/chat/completions",
        json={"model": "canned", "messages": CHAT},
        headers={"x-api-key": key},
    )
    assert r.status_code == 200


def test_a_model_outside_the_allowlist_gets_403_in_each_dialect(keyed: Keyed) -> None:
    key = keyed.keys["paperless"]  # --models canned
    with pytest.raises(ollama.ResponseError) as oe:
        keyed.ollama(key).chat(model="other", messages=CHAT)
    assert oe.value.status_code == 403
    assert "may not use model 'other'" in oe.value.error
    with pytest.raises(openai.PermissionDeniedError) as ae:
        keyed.openai(key).chat.completions.create(model="other", messages=CHAT)  # type: ignore[arg-type]
    assert ae.value.status_code == 403
    # The lists show such a key only what it may use.
    assert [m.model for m in keyed.ollama(key).list().models] == ["canned:latest"]
    assert [m.id for m in keyed.openai(key).models.list()] == ["canned:latest"]
    assert len(keyed.ollama(MASTER).list().models) == 2
    # Describing a model follows the same allowlist as using it.
    with pytest.raises(ollama.ResponseError) as se:
        keyed.ollama(key).show("other")
    assert se.value.status_code == 403
    with pytest.raises(openai.PermissionDeniedError):
        keyed.openai(key).models.retrieve("other")
    assert keyed.openai(key).models.retrieve("canned").id == "canned"


def test_over_the_rpm_limit_is_429_with_retry_after_in_each_dialect(keyed: Keyed) -> None:
    key = keyed.keys["tight"]  # --rpm 2
    keyed.ollama(key).chat(model="canned", messages=CHAT)
    keyed.openai(key).chat.completions.create(model="canned", messages=CHAT)  # type: ignore[arg-type]
    with pytest.raises(ollama.ResponseError) as oe:
        keyed.ollama(key).chat(model="canned", messages=CHAT)
    assert oe.value.status_code == 429
    assert "2 requests per minute" in oe.value.error
    with pytest.raises(openai.RateLimitError) as ae:
        keyed.openai(key).chat.completions.create(model="canned", messages=CHAT)  # type: ignore[arg-type]
    retry_after = int(ae.value.response.headers["retry-after"])
    assert 1 <= retry_after <= 30  # GCRA: the next request is earned in 60/2 s
    assert ae.value.code == "rate_limit_exceeded"


def test_an_exhausted_budget_is_429_saying_so(keyed: Keyed) -> None:
    key = keyed.keys["thrifty"]  # 0.03/day, and each request costs 0.02 (reported)
    client = keyed.openai(key)
    client.chat.completions.create(model="canned", messages=CHAT)  # type: ignore[arg-type]
    client.chat.completions.create(model="canned", messages=CHAT)  # type: ignore[arg-type]
    with pytest.raises(openai.RateLimitError) as e:
        client.chat.completions.create(model="canned", messages=CHAT)  # type: ignore[arg-type]
    assert "budget exhausted for API key 'thrifty'" in e.value.message
    assert "$0.03 per day" in e.value.message and "resets at" in e.value.message
    assert e.value.code == "insufficient_quota"
    listed = {k["name"]: k for k in keyed.admin("GET", "/keys").json()["keys"]}
    assert listed["thrifty"]["spent"] == pytest.approx(0.04)


def test_keys_are_created_listed_and_revoked_through_the_admin_api(keyed: Keyed) -> None:
    r = keyed.admin(
        "POST",
        "/keys",
        json={
            "name": "frigate",
            "models": ["canned"],
            "rpm": 60,
            "budget": "5/month",
            "expires": "90d",
        },
    )
    assert r.status_code == 201, r.text
    made = r.json()
    key = made["key"]
    assert key.startswith("sk-aistack-") and made["hint"].endswith(key[-4:])
    assert made["budget"] == 5 and made["budget_period"] == "month"
    assert keyed.ollama(key).chat(model="canned", messages=CHAT).message.content == "ok"
    listed = {k["id"]: k for k in keyed.admin("GET", "/keys").json()["keys"]}
    assert "key" not in listed[made["id"]] and "hash" not in listed[made["id"]]
    assert listed[made["id"]]["state"] == "active"
    assert keyed.admin("DELETE", f"/keys/{made['id']}").status_code == 200
    with pytest.raises(ollama.ResponseError) as e:
        keyed.ollama(key).chat(model="canned", messages=CHAT)
    assert e.value.status_code == 401  # at once on the replica that revoked it
    assert keyed.admin("DELETE", f"/keys/{made['id']}").status_code == 404
    bad = keyed.admin("POST", "/keys", json={"name": "x", "budget": "lots"})
    assert bad.status_code == 400 and "AMOUNT/PERIOD" in bad.json()["error"]["message"]
    # Limits fit the stores' INTEGER columns (32 bits on PostgreSQL): beyond, a 400 that
    # names the field, not a failed INSERT (a 500 the fuzz found with 2**63).
    for field, value in (("concurrent", 2**63), ("rpm", 2**31), ("tpm", 2**64 - 1)):
        bad = keyed.admin("POST", "/keys", json={"name": "x", field: value})
        assert bad.status_code == 400, bad.text
        assert bad.json()["error"]["message"] == f"{field} must be at most {2**31 - 1}"
    bad = keyed.admin("POST", "/keys", json={"name": "x", "rpm": 10**30})  # read as a float
    assert bad.status_code == 400 and bad.json()["error"]["param"] == "rpm"
    most = keyed.admin("POST", "/keys", json={"name": "big", "tpm": 2**31 - 1})
    assert most.status_code == 201 and most.json()["tpm"] == 2**31 - 1


def test_the_admin_api_needs_the_master_key(keyed: Keyed) -> None:
    for headers in ({}, {"Authorization": f"Bearer {keyed.keys['paperless']}"}):
        r = httpx.get(f"{keyed.gw.url}/admin/api/keys", headers=headers)
        assert r.status_code == 401
    # Forward-auth headers from an untrusted peer (no trusted_proxies) count for nothing.
    r = httpx.get(
        f"{keyed.gw.url}/admin/api/keys",
        headers={"X-authentik-username": "akadmin", "X-authentik-groups": "admins"},
    )
    assert r.status_code == 401


def test_a_revocation_from_the_cli_reaches_the_running_gateway_by_its_watch(keyed: Keyed) -> None:
    key = create_key(keyed.config, "--name", "short-lived")
    assert keyed.ollama(key).chat(model="canned", messages=CHAT).message.content == "ok"
    out = aistack_cli("keys", "revoke", "short-lived", config=keyed.config, env=ENV)
    assert out.returncode == 0, out.stderr
    # auth.refresh is an hour here: only the watch of the access stamp can tell it.
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            keyed.ollama(key).chat(model="canned", messages=CHAT)
        except ollama.ResponseError as e:
            assert e.status_code == 401 and "was revoked" in e.error
            break
        time.sleep(0.05)
    else:
        pytest.fail("a key revoked by the CLI kept working")


@pytest.mark.parametrize(
    ("expires", "why"),
    [
        ("99999999999999d", "write a duration"),
        ("2020-01-01", "not in the future"),
        ("9999-01-01", "years away"),
        (90, "write a duration"),
    ],
)
def test_an_expiry_must_be_a_future_date_within_bounds(
    keyed: Keyed, expires: object, why: str
) -> None:
    r = keyed.admin("POST", "/keys", json={"name": "when", "expires": expires})
    assert r.status_code == 400, r.text
    assert why in r.json()["error"]["message"]
    if isinstance(expires, str):
        out = aistack_cli(
            "keys", "create", "--name", "when", "--expires", expires, config=keyed.config, env=ENV
        )
        assert out.returncode == 2 and why in out.stderr


def test_the_end_user_an_app_forwards_is_in_the_ledger(keyed: Keyed) -> None:
    headers = {
        "Authorization": f"Bearer {keyed.keys['paperless']}",
        "X-OpenWebUI-User-Name": "Ann",
        "X-OpenWebUI-User-Email": "ann@example.org",
        "X-OpenWebUI-User-Id": "u-1",
    }
    r = httpx.post(
        f"{keyed.gw.url}/api/chat",
        json={"model": "canned", "messages": CHAT, "stream": False},
        headers=headers,
    )
    assert r.status_code == 200
    rows = keyed.admin("GET", "/requests", params={"limit": 1}).json()["requests"]
    (row,) = rows
    assert row["end_user"] == "ann@example.org"
    assert row["app"] == "paperless" and row["dialect"] == "ollama" and row["route"] == "chat"
    assert (row["backend"], row["upstream_model"], row["model"]) == (
        "fake",
        "canned",
        "canned:latest",
    )
    assert (row["tokens_in"], row["tokens_out"], row["tokens_estimated"]) == (7, 3, 0)
    assert (row["cost"], row["cost_source"]) == (0.02, "backend")
    assert row["status"] == 200 and row["ttft_ms"] > 0 and row["duration_ms"] >= row["ttft_ms"]


def test_the_usage_report_counts_what_the_request_log_holds(keyed: Keyed) -> None:
    log = keyed.admin("GET", "/requests", params={"limit": 1000}).json()["requests"]
    rep = keyed.admin("GET", "/usage", params={"by": "key,model", "since": "1h"}).json()
    assert rep["total"]["requests"] == len(log) > 10
    by_app = {r["app"]: r["requests"] for r in keyed.admin("GET", "/usage").json()["rows"]}
    assert by_app["tight"] == sum(1 for r in log if r["app"] == "tight")
    assert sum(1 for r in log if r["status"] == 401) >= 6  # refusals are recorded too
    bad = keyed.admin("GET", "/usage", params={"by": "colour"})
    assert bad.status_code == 400 and "choose from" in bad.json()["error"]["message"]


def test_no_key_ever_appears_in_plaintext_in_logs_the_database_or_bodies(keyed: Keyed) -> None:
    # Runs after the others (file order): every key above has been used, refused,
    # listed and revoked by now, with the gateway logging at debug.
    keyed.gw.stop()  # the ledger is flushed at shutdown
    secrets = [*keyed.keys.values(), MASTER, "sk-aistack-" + "x" * 43]
    log = keyed.gw.output()
    assert "401" in log or "invalid API key" in log  # the log did see the refusals
    stored = b"".join(
        p.read_bytes() for p in keyed.db.parent.glob(keyed.db.name + "*") if p.is_file()
    )
    with sqlite3.connect(keyed.db) as c:
        hashes = [h for (h,) in c.execute("SELECT hash FROM api_keys")]
        assert len(hashes) >= 5 and all(len(h) == 64 for h in hashes)
    for s in secrets:
        assert s not in log
        assert s.encode() not in stored
