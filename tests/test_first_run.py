"""A first run nobody can lock themselves out of, and access rules that hold.

Real gateways (`aistack serve`) and the real `aistack` command line, as a new user runs
them: the admin credential made on first start and its one-time sign-in link, `aistack
admin link`, `AISTACK_MASTER_KEY` alone, the first key and a key whose allowlist serves
nothing, revoking every key and getting back in, sessions that die with the rules that
made them, scopes, throttled guesses, and the store shared by two replicas. The
browser's side of the first run is in tests/test_console_browser.py.

The model backend is a canned OpenAI-compatible server (tests/faults.py): these tests
are about who may do what, not about answers.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import stat
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import ollama
import openai
import pytest

from tests.fake_ollama import FakeOllama
from tests.faults import FaultServer, openai_canned
from tests.procs import (
    Proc,
    aistack_cli,
    create_key,
    free_port,
    running,
    start_gateway,
    write_config,
)

CHAT = [{"role": "user", "content": "hi"}]
LINK = re.compile(r"console: sign in at (http://\S+/ui/login\?link=\S+)")


@pytest.fixture(scope="module")
def backend() -> Iterator[FaultServer]:
    fs = FaultServer(openai_canned(("canned", "other"))).start()
    yield fs
    fs.stop()


def _cfg(backend: FaultServer, tmp: Path, **extra: object) -> dict[str, object]:
    port = free_port()
    return {
        # The CLI finds the running gateway at the config's own address.
        "server": {"port": port},
        "backends": [{"name": "fake", "kind": "openai", "url": f"{backend.url}/v1"}],
        "data_dir": str(tmp / "data"),
        **extra,
    }


def _serve(tmp: Path, cfg: dict[str, object], name: str = "gw", **kw: object) -> Proc:
    server = cfg["server"]
    assert isinstance(server, dict)
    return start_gateway(tmp, cfg, name=name, port=server["port"], **kw)  # type: ignore[arg-type]


def _link_from(proc: Proc) -> str:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        m = LINK.search(proc.output())
        if m:
            return m.group(1)
        time.sleep(0.05)
    raise AssertionError(f"no sign-in link in the log:\n{proc.output()[-2000:]}")


def _until_refused(url: str, headers: dict[str, str]) -> None:
    deadline = time.monotonic() + 30
    while True:
        try:
            ollama.Client(url, headers=headers).chat(model="canned", messages=CHAT)
        except ollama.ResponseError as e:
            assert e.status_code == 401, e
            return
        assert time.monotonic() < deadline, f"still served with {headers}"
        time.sleep(0.05)


@contextlib.contextmanager
def _signed_in(url: str, link: str) -> Iterator[tuple[httpx.Client, str]]:
    """A client signed in by a link, and its CSRF token."""
    with httpx.Client(base_url=url, timeout=30, follow_redirects=False) as c:
        r = c.get(link.replace(url, ""))
        assert r.status_code == 303, r.text
        assert r.headers["location"] == "/ui"
        page = c.get("/ui/keys")
        assert page.status_code == 200
        m = re.search(r'name="aistack-csrf" content="([0-9a-f]+)"', page.text)
        assert m
        yield c, m.group(1)


# -- the admin credential and its links


def test_a_first_start_makes_an_owner_only_admin_credential_and_prints_a_one_time_link(
    tmp_path: Path, backend: FaultServer
) -> None:
    cfg = _cfg(backend, tmp_path)
    with running(_serve(tmp_path, cfg)) as gw:
        key_file = tmp_path / "data" / "admin.key"
        assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
        assert stat.S_IMODE(key_file.parent.stat().st_mode) == 0o700
        secret = key_file.read_text().strip()
        assert secret.startswith("sk-aistack-admin-")
        assert f"admin credential {key_file} made now" in gw.output()
        # Still open to local callers: the generated credential does not close it.
        assert ollama.Client(gw.url).chat(model="canned", messages=CHAT).message.content == "ok"
        link = _link_from(gw)
        assert link.startswith(f"{gw.url}/ui/login?link=")
        with _signed_in(gw.url, link) as (c, _):
            me = c.get("/admin/api/me").json()
            assert (me["name"], me["role"], me["via"]) == ("admin", "admin", "session")
        # Once: a second use signs nobody in, and says how to get a fresh one.
        with httpx.Client(base_url=gw.url, timeout=30) as again:
            r = again.get(link.replace(gw.url, ""))
            assert r.status_code == 401
            assert "used already" in r.text and "aistack admin link" in r.text
            assert "set-cookie" not in r.headers
        # The file's key is the admin's, for scripts too.
        admin = {"Authorization": f"Bearer {secret}"}
        assert httpx.get(f"{gw.url}/admin/api/keys", headers=admin).status_code == 200
        assert secret not in gw.output()
    # A second start keeps it.
    with running(_serve(tmp_path, cfg, name="again")) as gw:
        assert key_file.read_text().strip() == secret
        assert f"admin credential {key_file} in use" in gw.output()


def test_aistack_admin_link_prints_a_fresh_link_for_whoever_can_read_the_credential(
    tmp_path: Path, backend: FaultServer
) -> None:
    cfg = _cfg(backend, tmp_path)
    config = write_config(tmp_path / "cli", cfg)
    before = aistack_cli("admin", "link", config=config)
    assert before.returncode == 1 and "aistack serve` makes one" in before.stderr
    with running(_serve(tmp_path, cfg)) as gw:
        out = aistack_cli("admin", "link", "--minutes", "5", config=config)
        assert out.returncode == 0, out.stderr
        link = out.stdout.strip()
        assert link.startswith(f"{gw.url}/ui/login?link=") and "valid 5 minutes" in out.stderr
        with _signed_in(gw.url, link):
            pass
        # A link made with another credential is refused.
        forged = link[: link.rindex(".") + 1] + "0" * 40
        r = httpx.get(forged, timeout=30)
        assert r.status_code == 401 and "not for this gateway" in r.text


def test_aistack_master_key_alone_grants_admin_without_a_yaml_file(tmp_path: Path) -> None:
    master = "env-only-master-key-0123456789"
    env = {"AISTACK_MASTER_KEY": master}
    # No --config, no $AISTACK_CONFIG, no ./aistack.yaml: the embedded default.
    with running(start_gateway(tmp_path, None, env=env)) as gw:
        headers = {"Authorization": f"Bearer {master}"}
        status = httpx.get(f"{gw.url}/admin/api/status", headers=headers, timeout=30)
        assert status.status_code == 200, status.text
        assert status.json()["auth"] == {"mode": "keys", "master_key": True, "keys": 0}
        assert "the master key is $AISTACK_MASTER_KEY" in gw.output()
        assert not (tmp_path / "gw" / "data" / "aistack" / "admin.key").exists()
        # A master key closes the gateway: keys are needed from the start.
        assert httpx.get(f"{gw.url}/api/tags", timeout=30).status_code == 401
        with httpx.Client(base_url=gw.url, timeout=30) as c:
            r = c.post("/ui/login", data={"key": master})
            assert r.status_code == 303
            assert c.get("/admin/api/me").json()["name"] == "master"
        # The CLI takes it from the environment too.
        out = aistack_cli("admin", "link", env={**env, "XDG_DATA_HOME": str(tmp_path)})
        assert out.returncode == 0 and "made from auth.master_key" in out.stderr


# -- the first key, and getting back in


def test_the_first_key_turns_keys_on_and_says_so_and_a_useless_allowlist_is_flagged(
    tmp_path: Path, backend: FaultServer
) -> None:
    cfg = _cfg(backend, tmp_path, database_url=str(tmp_path / "k.db"))
    config = write_config(tmp_path / "cli", cfg)
    with running(_serve(tmp_path, cfg)) as gw:
        first = aistack_cli("keys", "create", "--name", "paperless", "--models", "gpt-oss:*",
                            config=config)  # fmt: skip
        assert first.returncode == 0, first.stderr
        assert "This is the first key, so keys are on now" in first.stderr
        assert "--models 'gpt-oss:*' matches no model served now" in first.stderr
        assert "canned:latest" in first.stderr  # what is served, from the running gateway
        second = aistack_cli("keys", "create", "--name", "frigate", "--models", "can*",
                             config=config)  # fmt: skip
        assert second.returncode == 0
        assert "first key" not in second.stderr and "warning" not in second.stderr
        # On the running gateway within auth.watch: requests without a key are refused.
        _until_refused(gw.url, {})


def test_revoking_every_key_is_recoverable_from_the_cli_and_the_console(
    tmp_path: Path, backend: FaultServer
) -> None:
    cfg = _cfg(backend, tmp_path, database_url=str(tmp_path / "k.db"))
    config = write_config(tmp_path / "cli", cfg)
    with running(_serve(tmp_path, cfg)) as gw:
        key = create_key(config, "--name", "only")
        out = aistack_cli("keys", "revoke", "only", config=config)
        assert out.returncode == 0
        assert "No live key is left" in out.stderr and "aistack admin link" in out.stderr
        for k in (key, None):  # within auth.watch (0.5 s)
            headers = {"Authorization": f"Bearer {k}"} if k else {}
            _until_refused(gw.url, headers)
        # Back in from the CLI: a new key works at once.
        fresh = create_key(config, "--name", "fresh")
        client = openai.OpenAI(base_url=f"{gw.url}/v1", api_key=fresh, max_retries=0)
        assert client.chat.completions.create(model="canned", messages=CHAT).choices  # type: ignore[arg-type]
        # And from the console: a link, then a key made there.
        link = aistack_cli("admin", "link", config=config).stdout.strip()
        with _signed_in(gw.url, link) as (c, csrf):
            made = c.post("/admin/api/keys", json={"name": "from-console"},
                          headers={"X-Aistack-CSRF": csrf})  # fmt: skip
            assert made.status_code == 201
        headers = {"Authorization": f"Bearer {made.json()['key']}"}
        assert ollama.Client(gw.url, headers=headers).chat(model="canned", messages=CHAT)


def test_a_key_printed_by_keys_create_works_on_its_first_request(
    tmp_path: Path, backend: FaultServer
) -> None:
    # Neither the refresh nor the watch would bring it in time: the lookup of a key the
    # gateway has not loaded does.
    auth = {"master_key": "first-request-master-0123456789", "refresh": 3600, "watch": 3600}
    cfg = _cfg(backend, tmp_path, database_url=str(tmp_path / "k.db"), auth=auth)
    config = write_config(tmp_path / "cli", cfg)
    with running(_serve(tmp_path, cfg)) as gw:
        assert httpx.get(f"{gw.url}/api/tags", timeout=30).status_code == 401  # started
        for name in ("a", "b"):
            key = create_key(config, "--name", name)
            headers = {"Authorization": f"Bearer {key}"}
            reply = ollama.Client(gw.url, headers=headers).chat(model="canned", messages=CHAT)
            assert reply.message.content == "ok"


# -- sessions answer to the rules of now


def test_a_session_loses_its_rights_when_the_rules_that_made_it_change(
    tmp_path: Path, backend: FaultServer
) -> None:
    alice = {"X-authentik-username": "alice", "X-authentik-groups": "staff|ai-admins"}
    fwd = {"trusted_proxies": ["127.0.0.1/32"], "admin_groups": ["ai-admins"]}
    cfg = _cfg(backend, tmp_path, auth=fwd)
    with running(_serve(tmp_path, cfg)) as gw:
        with httpx.Client(base_url=gw.url, timeout=30, headers=alice) as c:
            assert c.get("/ui").status_code == 200
            fwd_cookie = c.cookies["aistack_console"]
        with _signed_in(gw.url, _link_from(gw)) as (link_client, _):
            link_cookie = link_client.cookies["aistack_console"]
        for cookie in (fwd_cookie, link_cookie):
            with httpx.Client(base_url=gw.url, cookies={"aistack_console": cookie}) as c:
                assert c.get("/admin/api/me").status_code == 200
    # The same store, other rules: ai-admins no longer admits, and the admin key is new.
    (tmp_path / "data" / "admin.key").unlink()
    cfg["auth"] = {**fwd, "admin_groups": ["gateway-admins"]}
    with running(_serve(tmp_path, cfg, name="changed")) as gw:
        for cookie in (fwd_cookie, link_cookie):
            with httpx.Client(base_url=gw.url, cookies={"aistack_console": cookie}) as c:
                assert c.get("/admin/api/me").status_code == 401
                assert c.get("/ui").status_code == 303


def test_sign_out_holds_on_every_replica(tmp_path: Path, backend: FaultServer) -> None:
    master = "replicas-master-key-0123456789"
    shared = {"database_url": str(tmp_path / "shared.db"),
              "auth": {"master_key": master, "watch": 0.2}}  # fmt: skip
    a_cfg, b_cfg = _cfg(backend, tmp_path, **shared), _cfg(backend, tmp_path, **shared)
    with running(_serve(tmp_path, a_cfg, "a")) as a, running(_serve(tmp_path, b_cfg, "b")) as b:
        with httpx.Client(base_url=a.url, timeout=30) as c:
            assert c.post("/ui/login", data={"key": master}).status_code == 303
            cookie = c.cookies["aistack_console"]
            page = c.get("/ui")
            csrf = re.search(r'name="aistack-csrf" content="([0-9a-f]+)"', page.text)
            assert csrf
        on_b = httpx.Client(base_url=b.url, timeout=30, cookies={"aistack_console": cookie})
        with on_b:
            assert on_b.get("/admin/api/me").status_code == 200  # made on A, known on B
            with httpx.Client(base_url=a.url, cookies={"aistack_console": cookie}) as c:
                assert c.post("/ui/logout", data={"csrf": csrf[1]}).status_code == 303
                assert c.get("/admin/api/me").status_code == 401  # at once on A
            deadline = time.monotonic() + 30
            while on_b.get("/admin/api/me").status_code != 401:
                assert time.monotonic() < deadline, "B still takes a signed-out session"
                time.sleep(0.05)


def test_cookies_are_secure_when_the_public_url_is_https(
    tmp_path: Path, backend: FaultServer
) -> None:
    master = "secure-cookie-master-0123456789"
    cfg = _cfg(backend, tmp_path, auth={"master_key": master})
    cfg["server"] = {**cfg["server"], "public_url": "https://ai.example.org"}  # type: ignore[dict-item]
    with running(_serve(tmp_path, cfg)) as gw:
        r = httpx.post(f"{gw.url}/ui/login", data={"key": master}, timeout=30)
        assert r.status_code == 303
        assert "; Secure" in r.headers["set-cookie"]


def test_failed_sign_ins_are_throttled_per_address(tmp_path: Path, backend: FaultServer) -> None:
    master = "throttled-master-key-0123456789"
    cfg = _cfg(backend, tmp_path, auth={"master_key": master})
    with running(_serve(tmp_path, cfg)) as gw, httpx.Client(base_url=gw.url, timeout=30) as c:
        codes = [c.post("/ui/login", data={"key": f"guess-{i:04d}-xxxxxxxxxx"}).status_code
                 for i in range(12)]  # fmt: skip
        assert codes[:10] == [401] * 10 and codes[10:] == [429, 429]
        # While throttled even the right key waits: guessing gains nothing.
        r = c.post("/ui/login", data={"key": master})
        assert r.status_code == 429 and int(r.headers["retry-after"]) >= 1
        for key in (f"{master}-wrong", master):
            bearer = {"Authorization": f"Bearer {key}"}
            assert c.get("/admin/api/keys", headers=bearer).status_code == 429
            assert httpx.post(f"{gw.url}/api/chat", headers=bearer, json={"model": "canned"},
                              timeout=30).status_code == 429  # fmt: skip


# -- scopes, lists and details that follow the key


@pytest.fixture(scope="module")
def box() -> Iterator[FakeOllama]:
    f = FakeOllama()
    f.add("llama3.2:1b", 1_000_000)
    f.add("qwen3:4b", 1_000_000)
    f.loaded.update({"llama3.2:1b", "qwen3:4b"})
    f.registry.update({"phi4:14b": 2_000_000})
    f.start()
    yield f
    f.stop()


def test_an_open_gateways_local_callers_pull_as_ollamas_users_can(
    tmp_path: Path, backend: FaultServer, box: FakeOllama
) -> None:
    cfg = _cfg(backend, tmp_path)
    cfg["backends"] = [*cfg["backends"], {"name": "box", "kind": "ollama", "url": box.url}]  # type: ignore[misc]
    with running(_serve(tmp_path, cfg)) as gw:
        client = ollama.Client(gw.url)
        assert client.pull("phi4:14b").status == "success"
        assert ("phi4:14b", 0) in box.pulls
        # A model a backend that cannot pull already serves: done, as Ollama answers.
        assert client.pull("canned").status == "success"
        streamed = list(client.pull("canned", stream=True))
        assert [p.status for p in streamed] == ["success"]
        # Not to a page that rebinds its name to this machine.
        r = httpx.post(f"{gw.url}/api/pull", json={"model": "phi4:14b"},
                       headers={"Host": "evil.example"}, timeout=30)  # fmt: skip
        assert r.status_code == 401


def test_scopes_give_keys_fleet_rights_and_lists_follow_their_allowlist(
    tmp_path: Path, backend: FaultServer, box: FakeOllama
) -> None:
    master = "scopes-master-key-0123456789"
    cfg = _cfg(backend, tmp_path, database_url=str(tmp_path / "k.db"),
               auth={"master_key": master})  # fmt: skip
    cfg["backends"] = [*cfg["backends"], {"name": "box", "kind": "ollama", "url": box.url}]  # type: ignore[misc]
    config = write_config(tmp_path / "cli", cfg)
    plain = create_key(config, "--name", "paperless", "--models", "llama3.2:*,c*")
    webui = create_key(config, "--name", "open-webui", "--scope", "models")
    prometheus = create_key(config, "--name", "prometheus", "--scope", "metrics")
    bad = aistack_cli("keys", "create", "--name", "x", "--scope", "modles", config=config)
    assert bad.returncode == 2 and "not a scope (scopes: metrics, models)" in bad.stderr
    with running(_serve(tmp_path, cfg)) as gw:

        def c(key: str) -> ollama.Client:
            return ollama.Client(gw.url, headers={"Authorization": f"Bearer {key}"})

        with pytest.raises(ollama.ResponseError) as e:
            c(plain).pull("phi4:14b")
        assert e.value.status_code == 403 and "needs scope 'models'" in e.value.error
        assert c(webui).pull("phi4:14b").status == "success"
        c(webui).delete("phi4:14b")
        # /api/ps shows a key what it may use, as /api/tags does.
        assert {m.model for m in c(plain).ps().models} == {"llama3.2:1b"}
        assert {m.model for m in c(webui).ps().models} == {"llama3.2:1b", "qwen3:4b"}
        # A 404's "did you mean" names only models the key may use.
        with pytest.raises(ollama.ResponseError) as nf:
            c(plain).chat(model="cother", messages=CHAT)
        assert nf.value.status_code == 404
        assert "canned" in nf.value.error and "other" not in nf.value.error.replace("cother", "")
        with pytest.raises(ollama.ResponseError) as nf2:
            c(webui).chat(model="cother", messages=CHAT)
        assert "'other:latest'" in nf2.value.error
        # /metrics and /health's details: an admin or a key with scope metrics.
        for key, metrics, details in ((None, 401, False), (plain, 403, False),
                                      (prometheus, 200, True), (master, 200, True)):  # fmt: skip
            headers = {"Authorization": f"Bearer {key}"} if key else {}
            assert httpx.get(f"{gw.url}/metrics", headers=headers).status_code == metrics
            health = httpx.get(f"{gw.url}/health", headers=headers).json()
            assert ("backends" in health) is details, health
            assert health["status"] in ("ok", "degraded", "down") and "ready" in health
            if details:
                assert {b["name"] for b in health["backends"]} == {"fake", "box"}
                assert health["deployments"]
            else:
                assert "deployments" not in health and "box" not in str(health)


def test_forward_auth_headers_from_a_peer_outside_trusted_proxies_count_for_nothing(
    tmp_path: Path, backend: FaultServer
) -> None:
    auth = {"master_key": "untrusted-master-0123456789",
            "trusted_proxies": ["10.0.0.0/8"], "admin_groups": []}  # fmt: skip
    cfg = _cfg(backend, tmp_path, auth=auth)
    akadmin = {"X-authentik-username": "akadmin", "X-authentik-groups": "ai-admins"}
    with running(_serve(tmp_path, cfg)) as gw, httpx.Client(base_url=gw.url, timeout=30) as c:
        assert c.get("/admin/api/keys", headers=akadmin).status_code == 401
        assert c.post("/admin/api/keys", json={"name": "x"}, headers=akadmin).status_code == 401
        page = c.get("/ui", headers=akadmin)
        assert page.status_code == 303 and "set-cookie" not in page.headers


def test_the_data_dir_holds_the_database_unless_told_otherwise(
    tmp_path: Path, backend: FaultServer
) -> None:
    cfg = _cfg(backend, tmp_path)
    with running(_serve(tmp_path, cfg)):
        assert (tmp_path / "data" / "aistack.db").is_file()
        # Beside it, the admin credential and the embedded vector store (vectors/).
        assert sorted(p.name for p in (tmp_path / "data").iterdir() if "db" not in p.name) == [
            "admin.key",
            "vectors",
        ]
        assert (tmp_path / "data" / "vectors" / "collections").is_dir()
    assert os.access(tmp_path / "data" / "admin.key", os.R_OK)


def test_doctor_and_models_inspect_the_running_gateway_and_say_which(
    tmp_path: Path, backend: FaultServer
) -> None:
    cfg = _cfg(backend, tmp_path)
    config = write_config(tmp_path / "cli", cfg)
    url = f"http://127.0.0.1:{cfg['server']['port']}"  # type: ignore[index]
    before = aistack_cli("models", config=config)
    assert f"Inspected: the backends directly (no gateway answers at {url})" in before.stdout
    with running(_serve(tmp_path, cfg)) as gw:
        # Found at the config's address, asked with the data directory's admin key.
        models = aistack_cli("models", "--json", config=config)
        assert models.returncode == 0, models.stderr
        assert json.loads(models.stdout)["inspected"] == f"the running gateway at {gw.url}"
        doctor = aistack_cli("doctor", "--prompts", "none", "--json", config=config)
        assert doctor.returncode == 0, doctor.stdout
        findings = json.loads(doctor.stdout)["findings"]
        assert (findings[0]["check"], findings[0]["target"]) == ("inspected", gw.url)
        assert {f["target"] for f in findings if f["check"] == "gateway"} == {
            f"{gw.url}/api/version",
            f"{gw.url}/api/tags",
            f"{gw.url}/v1/models",
        }
        direct = aistack_cli("models", "--direct", config=config)
        assert "Inspected: the backends directly (--direct)" in direct.stdout
        # A key for it from the environment; a wrong one is said, not hidden.
        wrong = aistack_cli("models", config=config, env={"AISTACK_KEY": "sk-aistack-nope"})
        assert "refused the key" in wrong.stderr and "backends directly" in wrong.stdout
