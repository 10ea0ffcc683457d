"""The web console's server side: sign-in, sessions, roles, CSRF, and the admin API
endpoints it added (sync, overview, latency, snippets, content, CSV).

A real gateway process fronting a stand-in Ollama model store (tests/fake_ollama.py),
no model engine: these tests are about who may do what. tests/test_console_browser.py
drives the pages in Chromium against the embedded model.
"""

from __future__ import annotations

import contextlib
import json
import re
import sqlite3
from collections.abc import Iterator
from dataclasses import dataclass

import httpx
import pytest

from aistack.access.sessions import COOKIE, cookie_value, session_id
from aistack.config import ConfigError, parse
from aistack.http.admin_routes import usage_csv
from tests.fake_ollama import FakeOllama
from tests.procs import Proc, running, start_gateway

MASTER = "sk-console-master-0123456789"
ADMIN_HEADERS = {"X-authentik-username": "alice", "X-authentik-groups": "staff|ai-admins"}
VIEWER_HEADERS = {"X-authentik-username": "victor", "X-authentik-groups": "ai-viewers"}


@dataclass
class Gw:
    proc: Proc
    store: FakeOllama

    @property
    def url(self) -> str:
        return self.proc.url

    def client(self, **kw: object) -> httpx.Client:
        return httpx.Client(base_url=self.url, timeout=30, follow_redirects=False, **kw)  # type: ignore[arg-type]


@pytest.fixture(scope="module")
def gw(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gw]:
    tmp = tmp_path_factory.mktemp("console")
    store = FakeOllama()
    store.add("llama3.2:1b", 1_300_000_000)
    store.registry.update({"qwen3:4b": 2_000_000_000})
    store.start()
    cfg = {
        "backends": [
            {"name": "box", "kind": "ollama", "url": store.url,
             "models": ["llama3.2:1b", "qwen3:4b"]},
        ],
        "auth": {
            "master_key": MASTER,
            # The test client is the "proxy": its forward-auth headers count.
            "trusted_proxies": ["127.0.0.1/32"],
            "admin_groups": ["ai-admins"],
            "viewer_groups": ["ai-viewers"],
        },
    }  # fmt: skip
    try:
        with running(start_gateway(tmp, cfg)) as p:
            yield Gw(p, store)
    finally:
        store.stop()


@contextlib.contextmanager
def sign_in(gw: Gw) -> Iterator[tuple[httpx.Client, str]]:
    """A client holding a console session, and the session's CSRF token."""
    with gw.client() as c:
        r = c.post("/ui/login", data={"key": MASTER, "next": "/ui/keys"})
        assert r.status_code == 303, r.text
        page = c.get("/ui/keys")
        assert page.status_code == 200
        m = re.search(r'name="aistack-csrf" content="([0-9a-f]+)"', page.text)
        assert m
        yield c, m.group(1)


def test_pages_need_a_sign_in_and_say_where(gw: Gw) -> None:
    with gw.client() as c:
        r = c.get("/ui/usage")
        assert r.status_code == 303
        assert r.headers["location"] == "/ui/login?next=/ui/usage"
        login = c.get("/ui/login")
        assert login.status_code == 200
        assert 'name="key"' in login.text and 'type="password"' in login.text
        # Someone else's API: the admin API answers 401, never a redirect.
        assert c.get("/admin/api/keys").status_code == 401


def test_sign_in_with_the_master_key_sets_a_session_cookie_kept_only_as_a_hash(gw: Gw) -> None:
    with gw.client() as c:
        wrong = c.post("/ui/login", data={"key": "sk-not-the-master-key-at-all"})
        assert wrong.status_code == 401
        assert "not the master key" in wrong.text
        assert "set-cookie" not in wrong.headers
        r = c.post("/ui/login", data={"key": MASTER, "next": "/ui/models"})
        assert r.status_code == 303
        assert r.headers["location"] == "/ui/models"
        cookie = r.headers["set-cookie"]
        for attr in ("HttpOnly", "SameSite=Strict", "Path=/", "Max-Age=43200"):
            assert attr in cookie
        assert "Secure" not in cookie  # plain http, and no https public URL
        value = cookie_value(cookie.split(";")[0].encode())
        assert value is not None and MASTER not in value and len(value) >= 43
        page = c.get("/ui/models")
        assert page.status_code == 200
        assert MASTER not in page.text
        assert 'name="aistack-role" content="admin"' in page.text
        # The store keeps the session's hash, never the cookie.
        db = gw.proc.log.parent / "data" / "aistack" / "aistack.db"
        with sqlite3.connect(db) as conn:
            rows = conn.execute("SELECT id, name, via FROM console_sessions").fetchall()
        assert (session_id(value), "master", "master key") in rows
        assert value.encode() not in db.read_bytes()
        # Sign-in never goes back to another site.
        r = c.post("/ui/login", data={"key": MASTER, "next": "https://evil.example/"})
        assert r.headers["location"] == "/ui"


def test_pages_carry_security_headers_and_static_files_are_ours(gw: Gw) -> None:
    with sign_in(gw) as (c, _):
        page = c.get("/ui")
        csp = page.headers["content-security-policy"]
        assert "default-src 'self'" in csp and "script-src 'self'" in csp
        assert "frame-ancestors 'none'" in csp
        assert page.headers["x-content-type-options"] == "nosniff"
        v = re.search(r"console\.js\?v=([0-9a-f]+)", page.text)
        assert v
        js = c.get(f"/ui/static/console.js?v={v.group(1)}")
        assert js.status_code == 200
        assert js.headers["content-type"].startswith("text/javascript")
        assert "immutable" in js.headers["cache-control"]
        # Nothing is fetched from elsewhere at run time.
        for asset in (page.text, js.text, c.get("/ui/static/console.css").text):
            assert not re.search(r"https?://(?!www\.w3\.org/2000/svg)", asset), "external URL"


def test_a_session_reads_the_admin_api_and_its_changes_need_the_csrf_token(gw: Gw) -> None:
    with sign_in(gw) as (c, csrf):
        assert c.get("/admin/api/keys").status_code == 200
        me = c.get("/admin/api/me").json()
        assert me["name"] == "master" and me["role"] == "admin" and me["via"] == "session"
        no_token = c.post("/admin/api/keys", json={"name": "csrf-less"})
        assert no_token.status_code == 403
        assert "CSRF" in no_token.json()["error"]["message"]
        wrong = c.post("/admin/api/keys", json={"name": "x"}, headers={"X-Aistack-CSRF": "0" * 40})
        assert wrong.status_code == 403
        cross = c.post(
            "/admin/api/keys",
            json={"name": "cross"},
            headers={"X-Aistack-CSRF": csrf, "Sec-Fetch-Site": "cross-site"},
        )
        assert cross.status_code == 403
        made = c.post("/admin/api/keys", json={"name": "from-console"},
                      headers={"X-Aistack-CSRF": csrf})  # fmt: skip
        assert made.status_code == 201
        assert made.json()["key"].startswith("sk-aistack-")
        gone = c.delete(f"/admin/api/keys/{made.json()['id']}", headers={"X-Aistack-CSRF": csrf})
        assert gone.status_code == 200


def test_the_session_is_the_callers_identity_on_the_model_apis_only_from_the_console(
    gw: Gw,
) -> None:
    """The playground is an ordinary chat call made as the signed-in user."""
    chat = {"model": "llama3.2:1b", "messages": [{"role": "user", "content": "hi"}]}
    with sign_in(gw) as (c, csrf):
        assert c.get("/v1/models").status_code == 200  # no key: the console user
        # A change needs the session's CSRF token, as in the admin API.
        assert c.post("/v1/chat/completions", json=chat).status_code == 403
        # From another site's page the cookie is no identity at all: no key, 401.
        other = {"Sec-Fetch-Site": "cross-site", "X-Aistack-CSRF": csrf}
        assert c.get("/v1/models", headers=other).status_code == 401
        assert c.post("/v1/chat/completions", json=chat, headers=other).status_code == 401
    with gw.client() as anonymous:
        assert anonymous.get("/v1/models").status_code == 401


def test_sign_out_ends_the_session(gw: Gw) -> None:
    with sign_in(gw) as (c, csrf):
        cookie = c.cookies[COOKIE]
        refused = c.post("/ui/logout", data={"csrf": "nope"})
        assert refused.status_code == 403
        r = c.post("/ui/logout", data={"csrf": csrf})
        assert r.status_code == 303
        assert r.headers["location"] == "/ui/login?bye=1"
        assert "Max-Age=0" in r.headers["set-cookie"]
    # The old cookie no longer works, even if a browser kept it.
    with gw.client(cookies={COOKIE: cookie}) as old:
        assert old.get("/admin/api/keys").status_code == 401
        assert old.get("/ui").status_code == 303


def test_a_tampered_or_unknown_cookie_is_refused(gw: Gw) -> None:
    with sign_in(gw) as (c, _):
        value = c.cookies[COOKIE]
    flipped = value[:-1] + ("A" if value[-1] != "A" else "B")
    for bad in (flipped, "x" * 43, "v1.garbage", ""):
        with gw.client(cookies={COOKIE: bad}) as x:
            assert x.get("/admin/api/keys").status_code == 401
            assert x.get("/ui").status_code == 303


def test_forward_auth_admins_and_viewers(gw: Gw) -> None:
    with gw.client(headers=VIEWER_HEADERS) as viewer:
        page = viewer.get("/ui/keys")
        assert page.status_code == 200
        assert 'name="aistack-role" content="viewer"' in page.text
        assert "read-only" in page.text
        assert "SameSite=Strict" in page.headers["set-cookie"]
        assert viewer.get("/admin/api/keys").status_code == 200
        assert viewer.get("/admin/api/models").status_code == 200
        assert viewer.get("/admin/api/sync").status_code == 200
        assert viewer.get("/admin/api/me").json()["role"] == "viewer"
        refused = [
            viewer.post("/admin/api/keys", json={"name": "nope"}),
            viewer.delete("/admin/api/keys/anything"),
            viewer.post("/api/pull", json={"model": "qwen3:4b"}),
            viewer.request("DELETE", "/api/delete", json={"model": "llama3.2:1b"}),
            viewer.post("/api/copy", json={"source": "llama3.2:1b", "destination": "x"}),
            viewer.post("/admin/api/sync", json={}),
        ]
        for r in refused:
            assert r.status_code == 403, r.text
            assert "read-only" in r.text
    # The same viewer by the session cookie alone (no proxy headers), CSRF token and all.
    with gw.client(headers=VIEWER_HEADERS) as v:
        page = v.get("/ui/keys")
        csrf = re.search(r'name="aistack-csrf" content="([0-9a-f]+)"', page.text)
        assert csrf
        cookie = v.cookies[COOKIE]
    with gw.client(cookies={COOKIE: cookie}) as v:
        assert v.get("/admin/api/keys").status_code == 200
        r = v.post("/admin/api/keys", json={"name": "nope"}, headers={"X-Aistack-CSRF": csrf[1]})
        assert r.status_code == 403
        assert gw.store.pulls == []
    with gw.client(headers=ADMIN_HEADERS) as admin:
        # The identity provider's cookie rides along with any request, cross-site too:
        # a change needs the console's CSRF token, like any other sign-in's.
        blind = admin.post("/admin/api/keys", json={"name": "by-alice"})
        assert blind.status_code == 403 and "CSRF" in blind.text
        page = admin.get("/ui")
        assert 'content="admin"' in page.text
        token = re.search(r'name="aistack-csrf" content="([0-9a-f]+)"', page.text)
        assert token
        csrf_h = {"X-Aistack-CSRF": token[1]}
        made = admin.post("/admin/api/keys", json={"name": "by-alice"}, headers=csrf_h)
        assert made.status_code == 201
        cross = admin.post("/admin/api/keys", json={"name": "x"},
                           headers={**csrf_h, "Sec-Fetch-Site": "cross-site"})  # fmt: skip
        assert cross.status_code == 403
        gone = admin.delete(f"/admin/api/keys/{made.json()['id']}", headers=csrf_h)
        assert gone.status_code == 200
    stranger = {"X-authentik-username": "eve", "X-authentik-groups": "staff"}
    with gw.client(headers=stranger) as c:
        assert c.get("/ui").status_code == 303
        assert c.get("/admin/api/keys").status_code == 401


def test_sync_plan_and_run_through_the_admin_api(gw: Gw) -> None:
    headers = {"Authorization": f"Bearer {MASTER}"}
    with gw.client(headers=headers) as c:
        plan = c.get("/admin/api/sync").json()
        actions = {(s["backend"], s["model"]): s["action"] for s in plan["steps"]}
        assert actions == {("box", "llama3.2:1b"): "keep", ("box", "qwen3:4b"): "pull"}
        assert c.get("/admin/api/sync?backends=nope").status_code == 404
        assert c.post("/admin/api/sync", json={"prune": "yes"}).status_code == 400
        events = []
        with c.stream("POST", "/admin/api/sync", json={}) as r:
            assert r.status_code == 200
            assert r.headers["content-type"] == "application/x-ndjson"
            events = [json.loads(line) for line in r.iter_lines() if line]
        kinds = [e["event"] for e in events]
        assert kinds[0] == "plan" and kinds[-1] == "done"
        assert "started" in kinds and "progress" in kinds and "finished" in kinds
        progress = [e["progress"] for e in events if e["event"] == "progress"]
        assert progress[-1]["status"] == "success"
        assert events[-1]["ok"] is True
        after = c.get("/admin/api/sync").json()
        assert {s["action"] for s in after["steps"]} == {"keep"}


def test_overview_latency_snippets_and_content_endpoints(gw: Gw) -> None:
    with gw.client(headers={"Authorization": f"Bearer {MASTER}"}) as c:
        o = c.get("/admin/api/overview").json()
        box = next(b for b in o["backends"] if b["name"] == "box")
        assert box["state"] in ("up", "unknown") and "loaded" in box and "spend_today" in box
        assert any(m["name"] == "llama3.2:1b" for m in o["models"])
        assert o["ledger"] is True and o["window_s"] == 300
        lat = c.get("/admin/api/latency?since=1d").json()
        assert lat["samples"] == 0 and lat["models"] == []
        assert c.get("/admin/api/latency?since=soon").status_code == 400
        sn = c.get("/admin/api/snippets?app=open-webui&model=llama3.2:1b").json()
        assert sn["snippet"]["app"] == "open-webui"
        assert "YOUR_AISTACK_KEY" in sn["env"]  # keys are required: a placeholder
        assert sn["env"].startswith("ENABLE_OLLAMA_API=false")
        assert c.get("/admin/api/snippets?app=nope").status_code == 400
        content = c.get("/admin/api/content?request_id=abc").json()
        assert content["capture"] is False and content["content"] is None
        assert "tracing.capture_content: true" in content["hint"]


def test_usage_exports_csv(gw: Gw) -> None:
    with gw.client(headers={"Authorization": f"Bearer {MASTER}"}) as c:
        r = c.get("/admin/api/usage?by=day,key&since=1d&format=csv")
        assert r.status_code == 200
        assert r.headers["content-type"].startswith("text/csv")
        assert "attachment" in r.headers["content-disposition"]
        head = r.text.splitlines()[0].split(",")
        # The groups first (a key's rows also name its app), then the sums.
        assert head[:2] == ["day", "key"] and set(head[2:-11]) <= {"app"}
        sums = ["requests", "errors", "tokens_in", "tokens_out", "cost", "cost_unknown",
                "avg_duration_ms", "images", "gpu_seconds", "partial", "points"]  # fmt: skip
        assert head[-11:] == sums
        assert c.get("/admin/api/usage?format=xml").status_code == 400


def test_usage_csv_writes_groups_then_sums_and_defuses_formulas() -> None:
    report = {
        "by": ["key"],
        "rows": [{"key": "key_1", "app": "=HYPERLINK(1)", "requests": 2, "errors": 0,
                  "tokens_in": 10, "tokens_out": 5, "cost": 0.5, "cost_unknown": 0,
                  "avg_duration_ms": 12.5, "images": 0, "gpu_seconds": 0.0, "partial": 1,
                  "points": 3}],
    }  # fmt: skip
    lines = usage_csv(report).splitlines()
    assert lines[0] == (
        "key,app,requests,errors,tokens_in,tokens_out,cost,cost_unknown,avg_duration_ms,"
        "images,gpu_seconds,partial,points"
    )
    assert lines[1] == "key_1,'=HYPERLINK(1),2,0,10,5,0.5,0,12.5,0,0.0,1,3"


def test_console_config_is_checked() -> None:
    with pytest.raises(ConfigError, match=r"auth\.viewer_groups: set auth\.admin_groups too"):
        parse("auth: {viewer_groups: [ai-viewers]}", "t.yaml")
    with pytest.raises(ConfigError, match=r"console\.session_hours"):
        parse("console: {session_hours: 0}", "t.yaml")
    cfg = parse("console: {enabled: false}", "t.yaml")
    assert cfg.console.enabled is False


def test_the_console_can_be_turned_off(tmp_path_factory: pytest.TempPathFactory, gw: Gw) -> None:
    tmp = tmp_path_factory.mktemp("console-off")
    off = {
        "backends": [{"name": "box", "kind": "ollama", "url": gw.store.url}],
        "console": {"enabled": False},
    }
    with running(start_gateway(tmp, off, name="off")) as p:
        assert httpx.get(f"{p.url}/ui", timeout=30).status_code == 404


def test_the_console_costs_api_requests_nothing(gw: Gw) -> None:
    """API routes are found by one dictionary lookup; the console's are more entries."""
    from aistack import rooms
    from aistack.config import Config
    from aistack.service import Gateway

    class _NoClient:
        async def aclose(self) -> None: ...

    app = rooms.app(Gateway(Config(), [], _NoClient()))  # type: ignore[arg-type]
    methods, path, params = app.table.find("/v1/chat/completions")
    assert methods is app.table.fixed["/v1/chat/completions"]
    assert path == "/v1/chat/completions" and not params
    assert "/ui/playground" in app.table.fixed and "/admin/api/overview" in app.table.fixed


SPLITS = [
    "/ui%0d%0aSet-Cookie:%20evil=1",
    "/ui/keys%0aLocation:%20https://evil.example/",
    "/ui%E2%80%A8x",  # a Unicode line separator
    "/ui/%09keys",
    "/ui\\@evil.example",
    "//evil.example/ui",
    "https://evil.example/ui",
]


@pytest.mark.parametrize("nxt", SPLITS)
def test_no_redirect_can_be_split_or_sent_elsewhere(gw: Gw, nxt: str) -> None:
    """Every redirect the console makes, fed a `next` with control characters or
    another site in it: the Location is /ui, nothing more."""

    def location(r: httpx.Response) -> str:
        assert r.status_code == 303, r.text
        assert "evil" not in r.headers.get("set-cookie", "")
        loc = r.headers["location"]
        assert loc == "/ui", loc
        return loc

    with gw.client() as c:
        location(c.post("/ui/login", content=f"key={MASTER}&next={nxt}",
                        headers={"Content-Type": "application/x-www-form-urlencoded"}))  # fmt: skip
        location(c.get(f"/ui/login?next={nxt}"))  # signed in: straight on
    with gw.client(headers=ADMIN_HEADERS) as c:
        location(c.get(f"/ui/login?next={nxt}"))  # forward auth: straight on


def test_a_page_path_with_control_characters_never_reaches_a_header(gw: Gw) -> None:
    with gw.client() as c:
        r = c.get("/ui/keys%0d%0aSet-Cookie:%20evil=1")
        assert r.status_code in (303, 404)
        assert "evil" not in r.headers.get("set-cookie", "")
        assert "\r" not in r.headers.get("location", "") and "\n" not in r.headers.get(
            "location", ""
        )


CHANGES = [
    ("POST", "/admin/api/keys", {"name": "csrf-less"}),
    ("DELETE", "/admin/api/keys/nope", None),
    ("POST", "/admin/api/sync", {}),
    ("POST", "/api/pull", {"model": "qwen3:4b"}),
    ("DELETE", "/api/delete", {"model": "llama3.2:1b"}),
    ("POST", "/api/copy", {"source": "llama3.2:1b", "destination": "x"}),
    ("POST", "/v1/chat/completions", {"model": "llama3.2:1b", "messages": []}),
    ("POST", "/api/chat", {"model": "llama3.2:1b", "messages": []}),
]


@pytest.mark.parametrize(
    ("method", "path", "body"), CHANGES, ids=[f"{m} {p}" for m, p, _ in CHANGES]
)
@pytest.mark.parametrize("how", ["session", "forward auth"])
def test_every_change_from_a_browser_needs_the_csrf_token(
    gw: Gw, method: str, path: str, body: object, how: str
) -> None:
    headers = ADMIN_HEADERS if how == "forward auth" else {}
    pulls = len(gw.store.pulls)
    with contextlib.ExitStack() as stack:
        if how == "session":
            c, _ = stack.enter_context(sign_in(gw))
        else:
            c = stack.enter_context(gw.client(headers=headers))
            assert c.get("/ui").status_code == 200  # the session the proxy's user gets
        for token in (None, "0" * 40):
            extra = {"X-Aistack-CSRF": token} if token else {}
            r = c.request(method, path, json=body, headers=extra)
            assert r.status_code == 403, (token, r.text)
            assert "CSRF" in r.text
    assert len(gw.store.pulls) == pulls  # nothing reached the backend
