"""The model fleet: inventory, pull/delete/copy with progress, and declarative sync.

Instances: aistack processes serving the Ollama dialect (the session's `upstream`, and
a second one here with a 5-minute keep_alive) stand in for Ollama boxes for inventory,
show and ps; a small server playing Ollama's model store (tests/fake_ollama.py) for
pull (its documented progress stream, an error mid-pull, resumable partial pulls),
delete and copy. Every command runs as a real `aistack` process.
"""

from __future__ import annotations

import json
import re
import signal
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import ollama
import pytest

from aistack.backends.base import Backend
from aistack.core.errors import ErrorKind, GatewayError
from aistack.core.fleet import PullProgress
from aistack.core.models import ModelCard
from aistack.fleet.placement import choose, resolve_alias
from aistack.fleet.progress import PullMeter, human_bytes, human_duration
from tests.cli import aistack, popen, write_config
from tests.conftest import LLAMACPP_MODEL, UPSTREAM_MODEL, Stack
from tests.fake_ollama import FakeOllama
from tests.procs import Proc, create_key, running, start_gateway

SECOND_MODEL = "smollm2-second:135m"
GB = 1_000_000_000
# The fleet gateway has a master key: managing models is for admins.
MASTER = "sk-fleet-master-0123456789"
ADMIN = {"Authorization": f"Bearer {MASTER}"}


@dataclass
class Fleet:
    second: Proc
    store: FakeOllama
    store2: FakeOllama
    gw: Proc
    config: Path  # for the command line: every instance, plus local and llama.cpp


@pytest.fixture(scope="module")
def fleet(tmp_path_factory: pytest.TempPathFactory, stack: Stack) -> Iterator[Fleet]:
    tmp = tmp_path_factory.mktemp("fleet")
    store = FakeOllama(delay=0.01)
    store.add("llama3.2:1b", 1_300_000_000, family="llama", quantization="Q8_0")
    store.add("qwen3:4b", 2_500_000_000, family="qwen3", parameter_size="4B")
    store.loaded.add("qwen3:4b")
    store.registry.update({"gpt-oss:20b": 13 * GB, "phi4-mini:latest": 2 * GB})
    store.fail_once_at["phi4-mini:latest"] = GB
    store.start()
    store2 = FakeOllama()
    store2.add("llama3.2:1b", 1_300_000_000)
    store2.start()
    second_cfg = {
        "backends": [
            {"name": "local", "kind": "local", "model_name": SECOND_MODEL, "n_threads": 1,
             "keep_alive": 300}
        ]
    }  # fmt: skip
    backends = [
        {"name": "voice", "kind": "ollama", "url": stack.upstream.url},
        {"name": "store", "kind": "ollama", "url": "STORE",
         "models": ["llama3.2:1b", "gpt-oss:20b"]},
        {"name": "store2", "kind": "ollama", "url": "STORE2"},
        {"name": "llamacpp", "kind": "openai", "url": f"{stack.llama.url}/v1"},
    ]  # fmt: skip
    try:
        with running(start_gateway(tmp, second_cfg, name="second")) as second:
            backends.insert(1, {"name": "vision", "kind": "ollama", "url": second.url})
            for b in backends:
                b["url"] = {"STORE": store.url, "STORE2": store2.url}.get(str(b["url"]), b["url"])
            gw_cfg = {
                "backends": backends,
                "aliases": {"reason": "gpt-oss:20b"},
                "auth": {"master_key": MASTER, "refresh": 0.5},
            }
            with running(start_gateway(tmp, gw_cfg, name="fleet-gw")) as gw:
                cli_cfg = {
                    "backends": [*backends, {"name": "local", "kind": "local"}],
                    "aliases": {"reason": "gpt-oss:20b", "tiny": "smollm2:135m"},
                }
                path = write_config(tmp / "cli" / "aistack.yaml", cli_cfg)
                yield Fleet(second, store, store2, gw, path)
    finally:
        store.stop()
        store2.stop()


# -- inventory


def _instances(data: dict[str, object], name: str) -> dict[str, dict[str, object]]:
    models = {m["name"]: m for m in data["models"]}  # type: ignore[attr-defined]
    return {i["backend"]: i for i in models[name]["instances"]}


def test_inventory_shows_every_model_on_every_instance(fleet: Fleet) -> None:
    # Load the second instance's model, so /api/ps has something with an expiry.
    ollama.Client(host=fleet.second.url).generate(SECOND_MODEL, "")
    out = aistack("models", "--json", config=fleet.config)
    assert out.returncode == 0, out.stderr
    data = json.loads(out.stdout)

    backends = {b["name"]: b for b in data["backends"]}
    assert all(b["reachable"] for b in backends.values())
    assert backends["store"]["manages_models"] and backends["voice"]["manages_models"]
    assert not backends["local"]["manages_models"] and not backends["llamacpp"]["manages_models"]

    # An aistack instance in the Ollama dialect: details from /api/show.
    up = _instances(data, UPSTREAM_MODEL)["voice"]
    assert up["family"] == "llama" and up["quantization"] == "Q4_1"
    assert up["parameter_size"] == "135M" and up["size"] > 50_000_000
    assert re.fullmatch(r"[0-9a-f]{64}", up["digest"])
    assert "completion" in up["capabilities"] and up["context_length"]
    assert up["modified_at"]

    # Loaded on the second instance, with its expiry (keep_alive 300 s).
    second = _instances(data, SECOND_MODEL)["vision"]
    loaded = second["loaded"]
    assert loaded is not None and loaded["size"] > 0
    from datetime import datetime

    expires = datetime.fromisoformat(loaded["expires_at"].replace("Z", "+00:00")).timestamp()
    assert time.time() < expires < time.time() + 400

    # One model on two instances; a declared one that is missing; read-only backends.
    llama = {m["name"]: m for m in data["models"]}["llama3.2:1b"]
    assert sorted(llama["backends"]) == ["store", "store2"]
    assert _instances(data, "llama3.2:1b")["store"]["quantization"] == "Q8_0"
    assert _instances(data, "qwen3:4b")["store"]["loaded"]["size_vram"] == 2_500_000_000
    gpt = {m["name"]: m for m in data["models"]}["gpt-oss:20b"]
    assert gpt["missing_on"] == ["store"] and gpt["aliases"] == ["reason"]
    assert _instances(data, "gpt-oss:20b")["store"]["present"] is False
    assert "local" in _instances(data, "smollm2:135m")
    assert "llamacpp" in _instances(data, f"{LLAMACPP_MODEL}:latest")


def test_inventory_table(fleet: Fleet) -> None:
    out = aistack("models", config=fleet.config)
    assert out.returncode == 0, out.stderr
    text = out.stdout
    for header in ("MODEL", "BACKEND", "SIZE", "FAMILY", "QUANT", "DIGEST", "LOADED"):
        assert header in text
    row = next(line for line in text.splitlines() if line.startswith("qwen3:4b"))
    assert "store" in row and "2.5 GB" in row and "qwen3" in row and "VRAM" in row
    missing = next(line for line in text.splitlines() if line.startswith("gpt-oss:20b"))
    assert "MISSING" in missing and "reason" in missing


def test_inventory_reports_a_dead_backend_and_lists_the_rest(fleet: Fleet, tmp_path: Path) -> None:
    cfg = write_config(
        tmp_path / "aistack.yaml",
        {"backends": [
            {"name": "store", "kind": "ollama", "url": fleet.store.url},
            {"name": "dead", "kind": "ollama", "url": "http://127.0.0.1:9"},
        ]},
    )  # fmt: skip
    out = aistack("models", "--json", "--no-details", config=cfg)
    assert out.returncode == 1  # something is unreachable
    data = json.loads(out.stdout)
    dead = next(b for b in data["backends"] if b["name"] == "dead")
    assert not dead["reachable"] and "unreachable" in dead["error"]
    assert "qwen3:4b" in {m["name"] for m in data["models"]}


def test_inventory_through_the_gateway_admin_api(fleet: Fleet) -> None:
    data = httpx.get(f"{fleet.gw.url}/admin/api/models", headers=ADMIN, timeout=60).json()
    names = {b["name"] for b in data["backends"]}
    assert names == {"voice", "vision", "store", "store2", "llamacpp"}
    assert _instances(data, "qwen3:4b")["store"]["family"] == "qwen3"
    # The command line renders the gateway's answer the same way.
    # The key from the environment, never the command line (`ps` shows those).
    out = aistack("models", "--gateway", fleet.gw.url, "--json", env={"AISTACK_KEY": MASTER})
    assert out.returncode == 0, out.stderr
    got = json.loads(out.stdout)
    assert {b["name"] for b in got["backends"]} == names
    assert got["inspected"] == f"the running gateway at {fleet.gw.url}"
    refused = aistack("models", "--gateway", fleet.gw.url, env={"AISTACK_KEY": "sk-nope-123"})
    assert refused.returncode == 1 and "refused the key" in refused.stderr
    on_cli = aistack("models", "--gateway", fleet.gw.url, "--key", MASTER)
    assert on_cli.returncode == 2 and "not on the command line" in on_cli.stderr
    assert MASTER not in on_cli.stderr


# -- pull, delete, copy from the command line


def test_pull_shows_progress_with_bytes_speed_and_eta(fleet: Fleet) -> None:
    fleet.store.delay = 0.05
    try:
        out = aistack("models", "pull", "reason", "--instance", "store", config=fleet.config)
    finally:
        fleet.store.delay = 0.01
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert lines[0] == f"pulling gpt-oss:20b onto store ({fleet.store.url})"  # alias resolved
    assert lines[1] == "pulling manifest"
    bars = [ln for ln in lines if re.search(r"\d+% ▕", ln)]
    assert len(bars) >= 5
    # bytes done/total, speed and time left, as Ollama's own bar shows them
    assert any(re.search(r"GB/13\.0 GB +[\d.]+ GB/s +\d+s", ln) for ln in bars), bars
    assert lines[-1] == "success"
    assert "gpt-oss:20b" in fleet.store.models


def test_pull_error_mid_stream_fails_and_says_how_to_resume(fleet: Fleet) -> None:
    fleet.store.registry["broken:1b"] = GB
    fleet.store.fail_always.add("broken:1b")
    out = aistack("models", "pull", "broken:1b", "--instance", "store", config=fleet.config)
    assert out.returncode == 1
    assert "connection reset by peer" in out.stderr and "resume" in out.stderr
    assert "broken:1b" not in fleet.store.models


def test_pull_places_on_the_declaring_instance(fleet: Fleet) -> None:
    fleet.store.models.pop("gpt-oss:20b", None)
    out = aistack("models", "pull", "gpt-oss:20b", config=fleet.config)
    assert out.returncode == 0, out.stderr
    assert f"onto store ({fleet.store.url})" in out.stdout.splitlines()[0]


def test_copy_and_delete_from_the_command_line(fleet: Fleet) -> None:
    out = aistack("models", "copy", "qwen3:4b", "qwen3:mine", config=fleet.config)
    assert out.returncode == 0, out.stderr
    assert "copied qwen3:4b to qwen3:mine on store" in out.stdout
    assert fleet.store.models["qwen3:mine"].digest == fleet.store.models["qwen3:4b"].digest
    out = aistack("models", "delete", "qwen3:mine", config=fleet.config)
    assert out.returncode == 0, out.stderr
    assert "qwen3:mine" not in fleet.store.models
    out = aistack("models", "delete", "qwen3:mine", "--instance", "store", config=fleet.config)
    assert out.returncode == 1 and "not found" in out.stderr


def test_delete_on_several_instances_asks_which(fleet: Fleet) -> None:
    out = aistack("models", "delete", "llama3.2:1b", config=fleet.config)
    assert out.returncode == 1
    assert "several backends (store, store2)" in out.stderr and "--instance" in out.stderr
    assert "llama3.2:1b" in fleet.store.models and "llama3.2:1b" in fleet.store2.models


@pytest.mark.parametrize(
    ("instance", "why"),
    [
        ("local", "the embedded engine serves one GGUF file"),
        ("llamacpp", "the OpenAI API has no pull or delete"),
    ],
)
def test_backends_without_a_model_store_say_so(fleet: Fleet, instance: str, why: str) -> None:
    for args in (["pull", "x:1b"], ["delete", "x:1b"], ["copy", "x:1b", "y:1b"]):
        out = aistack("models", *args, "--instance", instance, config=fleet.config)
        assert out.returncode == 1
        assert f"backend '{instance}'" in out.stderr and why in out.stderr, out.stderr


# -- through the gateway: Ollama's /api/pull, /api/delete, /api/copy


def test_pull_through_the_gateway_streams_ollama_progress(fleet: Fleet) -> None:
    fleet.store.models.pop("gpt-oss:20b", None)
    client = ollama.Client(host=fleet.gw.url, headers=ADMIN)
    parts = list(client.pull("gpt-oss:20b", stream=True))
    statuses = [p.status for p in parts]
    assert statuses[0] == "pulling manifest" and statuses[-1] == "success"
    layer = [p for p in parts if p.digest and p.total == 13 * GB]
    assert layer and layer[-1].completed == 13 * GB
    # The catalog was refreshed: the new model is listed at once.
    assert "gpt-oss:20b" in [m.model for m in client.list().models]


def test_pull_like_open_webui(fleet: Fleet) -> None:
    """Open WebUI posts {"model", "insecure": true} and reads the NDJSON stream."""
    fleet.store.models.pop("gpt-oss:20b", None)
    with httpx.stream(
        "POST",
        f"{fleet.gw.url}/api/pull",
        json={"model": "gpt-oss:20b", "insecure": True},
        headers=ADMIN,
        timeout=60,
    ) as r:
        assert r.status_code == 200
        assert r.headers["content-type"] == "application/x-ndjson"
        assert r.headers["x-aistack-backend"] == "store"
        lines = [json.loads(line) for line in r.iter_lines() if line]
    assert lines[-1] == {"status": "success"}
    assert all(set(line) <= {"status", "digest", "total", "completed"} for line in lines)
    *_, body = next(q for q in reversed(fleet.store.requests) if q[1] == "/api/pull")
    assert body == {"model": "gpt-oss:20b", "insecure": True, "stream": True}


def test_pull_not_streamed_like_home_assistant(fleet: Fleet) -> None:
    fleet.store.models.pop("gpt-oss:20b", None)
    r = ollama.Client(host=fleet.gw.url, headers=ADMIN).pull("gpt-oss:20b")
    assert r.status == "success"
    assert "gpt-oss:20b" in fleet.store.models


def test_pull_error_mid_stream_reaches_the_client(fleet: Fleet) -> None:
    fleet.store.registry["broken:1b"] = GB
    fleet.store.fail_always.add("broken:1b")
    # Not declared anywhere: without a header it would go to the first Ollama backend.
    client = ollama.Client(host=fleet.gw.url, headers={**ADMIN, "X-Aistack-Backend": "store"})
    with pytest.raises(ollama.ResponseError) as e:
        list(client.pull("broken:1b", stream=True))
    assert "connection reset by peer" in str(e.value)
    with pytest.raises(ollama.ResponseError) as e:
        client.pull("broken:1b")
    assert e.value.status_code == 502 and "connection reset" in e.value.error
    with pytest.raises(ollama.ResponseError) as e:
        list(client.pull("no-such-model:1b", stream=True))
    assert "file does not exist" in str(e.value)
    # A name the registry does not have is the caller's mistake: 404, not "backend failed"
    # (the fuzz found the 502).
    with pytest.raises(ollama.ResponseError) as e:
        client.pull("no-such-model:1b")
    assert e.value.status_code == 404 and "file does not exist" in e.value.error


def test_copy_and_delete_through_the_gateway(fleet: Fleet) -> None:
    client = ollama.Client(host=fleet.gw.url, headers=ADMIN)
    assert client.copy("qwen3:4b", "qwen3:copy")["status"] == "success"
    assert "qwen3:copy" in fleet.store.models
    assert "qwen3:copy" in [m.model for m in client.list().models]
    assert client.delete("qwen3:copy")["status"] == "success"
    assert "qwen3:copy" not in fleet.store.models
    with pytest.raises(ollama.ResponseError) as e:
        client.delete("qwen3:copy")
    assert e.value.status_code == 404


def test_the_backend_header_picks_the_instance(fleet: Fleet) -> None:
    r = httpx.request(
        "DELETE",
        f"{fleet.gw.url}/api/delete",
        json={"model": "llama3.2:1b"},
        headers=ADMIN,
        timeout=30,
    )
    assert r.status_code == 409 and "store, store2" in r.json()["error"]
    r = httpx.post(
        f"{fleet.gw.url}/api/copy",
        json={"source": "llama3.2:1b", "destination": "llama3.2:spare"},
        headers={**ADMIN, "X-Aistack-Backend": "store2"},
        timeout=30,
    )
    assert r.status_code == 200 and r.headers["x-aistack-backend"] == "store2"
    assert "llama3.2:spare" in fleet.store2.models and "llama3.2:spare" not in fleet.store.models
    r = httpx.request(
        "DELETE",
        f"{fleet.gw.url}/api/delete?backend=store2",
        json={"model": "llama3.2:spare"},
        headers=ADMIN,
        timeout=30,
    )
    assert r.status_code == 200 and "llama3.2:spare" not in fleet.store2.models
    r = httpx.post(f"{fleet.gw.url}/api/pull", json={"model": "x:1b"},
                   headers={**ADMIN, "X-Aistack-Backend": "llamacpp"})  # fmt: skip
    assert r.status_code == 400 and "cannot pull models" in r.json()["error"]


def test_managing_models_needs_an_admin_or_the_models_scope(fleet: Fleet) -> None:
    """No key: 401 in the Ollama dialect; an app's key without scope `models`: 403; the
    master key, or a key with that scope (Open WebUI's): served."""
    cfg = fleet.gw.log.parent / "aistack.yaml"
    env = {"XDG_DATA_HOME": str(fleet.gw.log.parent / "data")}  # the gateway's database
    app_key = create_key(cfg, "--name", "paperless", env=env)
    for headers, status, says in (({}, 401, "missing API key"),
                                  (_bearer(app_key), 403, "needs scope 'models'")):  # fmt: skip
        r = httpx.post(f"{fleet.gw.url}/api/pull", json={"model": "x:1b"}, headers=headers)
        assert r.status_code == status and says in r.json()["error"]
        r = httpx.request(
            "DELETE", f"{fleet.gw.url}/api/delete", json={"model": "qwen3:4b"}, headers=headers
        )
        assert r.status_code == status and "qwen3:4b" in fleet.store.models
        r = httpx.get(f"{fleet.gw.url}/admin/api/models", headers=headers)
        assert r.status_code == 401  # the admin API is for admins, scope or not
    # The app's key still does what apps do.
    tags = ollama.Client(host=fleet.gw.url, headers=_bearer(app_key)).list()
    assert "qwen3:4b" in [m.model for m in tags.models]


def _bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def test_without_a_gate_only_loopback_callers_manage_models_and_nobody_administers() -> None:
    """A gateway built without keys (embedded) lets only its own machine pull, as an
    open gateway does; with no credential there is no admin at all."""
    import asyncio

    from aistack.backends.transport import HttpClient
    from aistack.config import parse
    from aistack.http.app import App
    from aistack.service import Gateway

    async def go() -> list[httpx.Response]:
        gw = Gateway(parse("backends: []", "test"), [], HttpClient())
        app = App(gw)
        out = []
        for client in (("192.0.2.7", 40000), ("127.0.0.1", 40000)):
            transport = httpx.ASGITransport(app=app, client=client)
            base = "http://127.0.0.1:8434"  # a loopback name, as a local caller uses
            async with httpx.AsyncClient(transport=transport, base_url=base) as c:
                out.append(await c.post("/api/pull", json={"model": "x:1b"}))
                out.append(await c.get("/admin/api/models"))
        return out

    remote_pull, remote_models, local_pull, local_models = asyncio.run(go())
    assert remote_pull.status_code == 403 and "own machine" in remote_pull.json()["error"]
    assert remote_models.status_code == 403
    assert local_pull.status_code == 400 and "no backend can pull" in local_pull.json()["error"]
    assert local_models.status_code == 403
    assert "no admin credential" in local_models.json()["error"]["message"]


# -- sync


@pytest.fixture
def box() -> Iterator[FakeOllama]:
    f = FakeOllama(delay=0.005)
    f.add("llama3.2:1b", GB)
    f.add("old-model:7b", 4 * GB)
    f.registry.update({"qwen3:8b": 5 * GB, "nomic-embed-text:latest": 300_000_000})
    f.start()
    yield f
    f.stop()


def _box_config(tmp: Path, box: FakeOllama, models: list[str]) -> Path:
    return write_config(
        tmp / "aistack.yaml",
        {"backends": [
            {"name": "box", "kind": "ollama", "url": box.url, "models": models},
            {"name": "local", "kind": "local", "models": ["smollm2:135m"]},
            {"name": "idle", "kind": "ollama", "url": "http://127.0.0.1:9"},
        ]},
    )  # fmt: skip


def test_sync_dry_run_shows_the_plan_and_changes_nothing(box: FakeOllama, tmp_path: Path) -> None:
    cfg = _box_config(tmp_path, box, ["llama3.2:1b", "qwen3:8b", "nomic-embed-text"])
    out = aistack("models", "sync", "--dry-run", config=cfg)
    assert out.returncode == 0, out.stdout + out.stderr
    rows = {tuple(line.split()[:2]): line for line in out.stdout.splitlines()[1:4]}
    assert "keep" in rows[("box", "llama3.2:1b")]
    assert "PULL" in rows[("box", "qwen3:8b")] and "PULL" in rows[("box", "nomic-embed-text")]
    assert "extra" in out.stdout and "old-model:7b" in out.stdout
    assert "skipped local: cannot pull" in out.stdout
    assert "skipped idle: declares no models" in out.stdout
    assert "dry run: nothing changed" in out.stdout
    assert box.pulls == [] and "old-model:7b" in box.models


def test_sync_pulls_prunes_and_resumes_a_failed_pull(box: FakeOllama, tmp_path: Path) -> None:
    cfg = _box_config(tmp_path, box, ["llama3.2:1b", "qwen3:8b", "nomic-embed-text"])
    box.fail_once_at["qwen3:8b"] = 2 * GB  # the connection drops 40% in
    out = aistack("models", "sync", "--prune", "--retry-delay", "0.1", config=cfg)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "retrying" in out.stdout and "connection reset" in out.stdout
    # The retry started where the failed attempt stopped.
    starts = [start for name, start in box.pulls if name == "qwen3:8b"]
    assert starts[0] == 0 and starts[1] >= 2 * GB
    assert {"qwen3:8b", "nomic-embed-text:latest", "llama3.2:1b"} <= set(box.models)
    assert "old-model:7b" not in box.models  # pruned
    assert "sync: 3 done, 0 failed" in out.stdout
    # Now in sync: nothing to do.
    again = aistack("models", "sync", "--json", config=cfg)
    plan = json.loads(again.stdout)
    assert again.returncode == 0 and plan["ok"]
    assert {s["action"] for s in plan["steps"]} == {"keep"}


def test_sync_survives_being_interrupted(box: FakeOllama, tmp_path: Path) -> None:
    cfg = _box_config(tmp_path, box, ["qwen3:8b"])
    # The pull stops at 1 GB until the interrupt has been handled: on a busy machine a
    # pull that just ran on could finish before the SIGINT arrives.
    box.hold_pull_at = GB
    p = popen("models", "sync", config=cfg)
    try:
        deadline = time.monotonic() + 120
        while box.partial.get("qwen3:8b", 0) < GB and time.monotonic() < deadline:
            time.sleep(0.05)
        p.send_signal(signal.SIGINT)
        stdout, stderr = p.communicate(timeout=60)
    finally:
        box.release_pulls()
    assert p.returncode == 130, stdout + stderr
    assert "interrupted" in stderr and "resume" in stderr
    assert "qwen3:8b" not in box.models
    box.delay = 0.005
    out = aistack("models", "sync", config=cfg)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "qwen3:8b" in box.models
    assert box.pulls[-1][0] == "qwen3:8b" and box.pulls[-1][1] >= GB  # it resumed


def test_sync_exits_non_zero_when_something_fails(box: FakeOllama, tmp_path: Path) -> None:
    cfg = _box_config(tmp_path, box, ["no-such-model:1b", "qwen3:8b"])
    out = aistack("models", "sync", "--json", "--retries", "0", config=cfg)
    assert out.returncode == 1
    result = json.loads(out.stdout)
    steps = {s["model"]: s for s in result["steps"]}
    assert not result["ok"]
    assert steps["no-such-model:1b"]["ok"] is False
    assert "file does not exist" in steps["no-such-model:1b"]["error"]
    assert steps["qwen3:8b"]["ok"] is True and "qwen3:8b" in box.models  # the rest ran


def test_sync_with_an_unreachable_backend_fails(tmp_path: Path) -> None:
    cfg = write_config(
        tmp_path / "aistack.yaml",
        {"backends": [{"name": "gone", "kind": "ollama", "url": "http://127.0.0.1:9",
                       "models": ["qwen3:8b"]}]},
    )  # fmt: skip
    out = aistack("models", "sync", config=cfg)
    assert out.returncode == 1 and "FAILED gone" in out.stdout


# -- units: placement and the progress meter


class Cloud(Backend):
    """A backend with no model store: only the required core."""

    kind = "openai"

    async def list_models(self) -> list[ModelCard]:
        return []


class Box(Cloud):
    """A backend with a model store (the ModelStore protocol)."""

    kind = "ollama"

    async def pull(self, model: str, *, insecure: bool = False) -> AsyncIterator[PullProgress]:
        yield PullProgress(status="success")

    async def delete(self, model: str) -> None: ...

    async def copy(self, source: str, destination: str) -> None: ...


def test_placement_rule() -> None:
    a, b, c = Box("a"), Box("b"), Cloud("c")
    bs = [c, a, b]
    declared = {"b": ["qwen3:8b"]}
    present = {"a": {"llama3.2:latest", "phi4:latest"}, "b": {"phi4:latest"}}

    def pick(action: str, model: str, explicit: str | None = None) -> str:
        return choose(
            action,  # type: ignore[arg-type]
            model,
            bs,
            explicit=explicit,
            declared=declared,
            present=present,
        ).name

    assert pick("pull", "qwen3:8b") == "b"  # declares it
    assert pick("pull", "llama3.2") == "a"  # has it (:latest implied)
    assert pick("pull", "new:1b") == "a"  # the first Ollama backend
    assert pick("pull", "new:1b", explicit="b") == "b"
    assert pick("delete", "llama3.2") == "a"
    assert pick("copy", "phi4") == "a"
    with pytest.raises(GatewayError) as e:
        pick("delete", "phi4")
    assert e.value.status == 409
    with pytest.raises(GatewayError) as e:
        pick("delete", "ghost:1b")
    assert e.value.kind is ErrorKind.NOT_FOUND
    with pytest.raises(GatewayError) as e:
        pick("pull", "x:1b", explicit="c")
    assert "cannot pull" in e.value.message
    with pytest.raises(GatewayError) as e:
        pick("pull", "x:1b", explicit="nope")
    assert "no backend named 'nope'" in e.value.message
    with pytest.raises(GatewayError) as e:
        choose("pull", "x:1b", [c])
    assert "only Ollama backends can" in e.value.message


def test_aliases_resolve_through_chains() -> None:
    aliases = {"reason": "big", "big": "gpt-oss:20b", "loop-a": "loop-b", "loop-b": "loop-a"}
    assert resolve_alias("reason", aliases) == "gpt-oss:20b"
    assert resolve_alias("Reason:latest", aliases) == "gpt-oss:20b"
    assert resolve_alias("other:1b", aliases) == "other:1b"
    resolve_alias("loop-a", aliases)  # terminates


def test_meter_speed_eta_and_a_resumed_layer() -> None:
    now = [0.0]
    m = PullMeter(clock=lambda: now[0])
    m.update(PullProgress(status="pulling manifest"))
    assert m.line() == "pulling manifest"
    d = "sha256:" + "a" * 64
    # A resumed layer starts at 4 GB: that head start is not speed.
    m.update(PullProgress(status="pulling aaaaaaaaaaaa", digest=d, total=10 * GB, completed=4 * GB))
    assert m.speed == 0 and m.eta is None
    now[0] = 2.0
    m.update(PullProgress(status="pulling aaaaaaaaaaaa", digest=d, total=10 * GB, completed=5 * GB))
    assert m.speed == pytest.approx(GB / 2)
    assert m.eta == pytest.approx(10.0)
    assert m.fraction == pytest.approx(0.5)
    line = m.line()
    assert "50%" in line and "5.0 GB/10.0 GB" in line and "500 MB/s" in line
    assert line.endswith("10s")
    assert human_bytes(999) == "999 B" and human_bytes(1_234_567) == "1.2 MB"
    assert human_duration(3725) == "1h02m" and human_duration(65) == "1m05s"
