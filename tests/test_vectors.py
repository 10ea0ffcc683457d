"""The vector store: the official qdrant-client (REST) against a real `aistack serve`.

Two engines pass the same client suite: `embedded` (the real Qdrant engine in process,
qdrant-edge-py) and `qdrant` (aistack proxying to a Qdrant server). No Qdrant server can
be installed here, so the `qdrant` engine proxies to a second aistack process with the
embedded engine, which serves Qdrant's documented API; the proxy uses nothing else.
"""

from __future__ import annotations

import asyncio
import hashlib
import importlib.metadata
import json
import signal
import tarfile
import time
import urllib.request
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from qdrant_client import QdrantClient
from qdrant_client import models as m
from qdrant_client.common.client_exceptions import ResourceExhaustedResponse
from qdrant_client.common.version_check import is_compatible
from qdrant_client.http.exceptions import UnexpectedResponse

from aistack.vectors.snapshots import parse_name, retained, snapshot_file
from tests.conftest import LOCAL_MODEL
from tests.procs import (
    Proc,
    aistack_cli,
    create_key,
    free_port,
    running,
    start_gateway,
    write_config,
)

pytestmark = [
    pytest.mark.slow,
    # qdrant-client warns that a key goes over plain http: these gateways are on loopback.
    pytest.mark.filterwarnings("ignore:Api key is used with an insecure connection"),
]

MASTER = "vectors-master-key-0123456789"
N, DIM = 10_000, 384


def config(**vectors: Any) -> dict[str, Any]:
    return {
        "backends": [{"name": "local", "kind": "local", "n_threads": 1}],
        "auth": {"master_key": MASTER, "refresh": 0.2},
        # The background index build is tested on its own: here every search is exact.
        "vectors": {"optimize_threshold": 0, **vectors},
    }


@dataclass
class Gw:
    proc: Proc
    keys: dict[str, str]
    work: Path
    listen: str = ""

    def client(self, key: str = MASTER, **kw: Any) -> QdrantClient:
        # The version check runs on a thread of its own, racing the test; the root's
        # version is checked once, directly, in the first test.
        return QdrantClient(
            url=self.proc.url, prefix="qdrant", api_key=key, timeout=120,
            check_compatibility=False, **kw,
        )  # fmt: skip


def start(
    tmp: Path, name: str, cfg: dict[str, Any], apps: tuple[str, ...] = (), **key_args: list[str]
) -> Gw:
    work = tmp / name
    path = write_config(work, cfg)
    env = {"XDG_DATA_HOME": str(work / "data")}
    keys = {a: create_key(path, "--name", a, *key_args.get(a, []), env=env) for a in apps}
    return Gw(start_gateway(tmp, cfg, name=name), keys, work)


@pytest.fixture(scope="module")
def embedded(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gw]:
    listen = free_port()
    quotas = {"appq": {"collections": 1, "points": 10}, "appd": {"disk_mb": 1}}
    cfg = config(quotas=quotas, listen=f"127.0.0.1:{listen}")
    apps = ("appa", "appb", "appq", "appr", "appd")
    gw = start(tmp_path_factory.mktemp("vectors"), "embedded", cfg, apps, appr=["--rpm", "1"])
    gw.listen = f"http://127.0.0.1:{listen}"
    with running(gw.proc):
        yield gw


@pytest.fixture(scope="module")
def proxied(embedded: Gw, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gw]:
    cfg = config(engine="qdrant", url=f"{embedded.proc.url}/qdrant", api_key="${UPSTREAM_KEY}")
    tmp = tmp_path_factory.mktemp("proxy")
    work = tmp / "proxy"
    path = write_config(work, cfg)
    env = {"XDG_DATA_HOME": str(work / "data"), "UPSTREAM_KEY": MASTER}
    keys = {"appp": create_key(path, "--name", "appp", env=env)}
    gw = Gw(start_gateway(tmp, cfg, name="proxy", env={"UPSTREAM_KEY": MASTER}), keys, work)
    with running(gw.proc):
        yield gw


@pytest.fixture(scope="module")
def data() -> tuple[np.ndarray, list[dict[str, Any]]]:
    rng = np.random.default_rng(19)
    x = rng.normal(size=(N, DIM)).astype(np.float32)
    payloads = [
        {"n": i, "tag": ("red", "green", "blue")[i % 3], "even": i % 2 == 0} for i in range(N)
    ]
    return x, payloads


def brute_force(x: np.ndarray, q: np.ndarray, mask: np.ndarray | None, k: int) -> list[int]:
    xn = x / np.linalg.norm(x, axis=1, keepdims=True)
    scores = xn @ (q / np.linalg.norm(q))
    if mask is not None:
        scores = np.where(mask, scores, -np.inf)
    return [int(i) for i in np.argsort(-scores, kind="stable")[:k]]


def _post(url: str, key: str, body: dict[str, Any]) -> Any:
    req = urllib.request.Request(
        url, json.dumps(body).encode(), headers={"api-key": key, "content-type": "application/json"}
    )
    with urllib.request.urlopen(req, timeout=120) as r:
        return json.loads(r.read())["result"]


def client_suite(
    c: QdrantClient,
    name: str,
    x: np.ndarray,
    payloads: list[dict[str, Any]],
    rest: str = "",
    key: str = MASTER,
) -> None:
    """What an app does with Qdrant, checked against numpy. `rest`: the API's root URL,
    for the endpoints qdrant-client no longer calls (the older `points/search`)."""
    if c.collection_exists(name):
        c.delete_collection(name)
    assert c.create_collection(
        name, vectors_config=m.VectorParams(size=DIM, distance=m.Distance.COSINE)
    )
    assert c.collection_exists(name)
    c.upload_points(
        name,
        [m.PointStruct(id=i, vector=x[i].tolist(), payload=payloads[i]) for i in range(N)],
        batch_size=1000,
        wait=True,
    )
    assert c.count(name).count == N
    c.create_payload_index(name, "tag", m.PayloadSchemaType.KEYWORD)
    c.create_payload_index(name, "n", m.PayloadSchemaType.INTEGER)
    info = c.get_collection(name)
    assert info.points_count == N and info.config.params.vectors.size == DIM  # type: ignore[union-attr]
    assert set(info.payload_schema) == {"tag", "n"}

    rng = np.random.default_rng(7)
    tags = np.array([p["tag"] for p in payloads])
    for _ in range(5):
        q = rng.normal(size=DIM).astype(np.float32)
        got = c.query_points(name, query=q.tolist(), limit=10).points
        assert [p.id for p in got] == brute_force(x, q, None, 10)
        red = m.Filter(must=[m.FieldCondition(key="tag", match=m.MatchValue(value="red"))])
        got = c.query_points(
            name, query=q.tolist(), query_filter=red, limit=10, with_payload=True
        ).points
        assert [p.id for p in got] == brute_force(x, q, tags == "red", 10)
        assert all(p.payload and p.payload["tag"] == "red" for p in got)
        # A range filter and an offset.
        few = m.Filter(must=[m.FieldCondition(key="n", range=m.Range(lt=5000))])
        got = c.query_points(name, query=q.tolist(), query_filter=few, limit=5, offset=5).points
        want = brute_force(x, q, np.arange(N) < 5000, 10)[5:]
        assert [p.id for p in got] == want
        if rest:
            # The older search endpoint (older clients and integrations still call it).
            flt = {"must": [{"key": "n", "range": {"lt": 5000}}]}
            url = f"{rest}/collections/{name}/points/search"
            hits = _post(url, key, {"vector": q.tolist(), "filter": flt, "limit": 5, "offset": 5})
            assert [h["id"] for h in hits] == want
            both = _post(
                f"{url}/batch",
                key,
                {"searches": [{"vector": q.tolist(), "limit": 10},
                              {"vector": q.tolist(), "filter": flt, "limit": 10}]},
            )  # fmt: skip
            assert [[h["id"] for h in r] for r in both] == [
                brute_force(x, q, None, 10), brute_force(x, q, np.arange(N) < 5000, 10)
            ]  # fmt: skip

    q = rng.normal(size=DIM).astype(np.float32)
    best = c.query_points(name, query=q.tolist(), limit=3, with_vectors=True).points
    unit = x[best[0].id] / np.linalg.norm(x[best[0].id])  # Cosine stores unit vectors, as Qdrant
    assert np.allclose(best[0].vector, unit, atol=1e-5)  # type: ignore[arg-type]
    threshold = (best[1].score + best[2].score) / 2
    above = c.query_points(name, query=q.tolist(), limit=10, score_threshold=threshold).points
    assert [p.id for p in above] == [p.id for p in best[:2]]
    batch = c.query_batch_points(
        name, requests=[m.QueryRequest(query=x[i].tolist(), limit=1) for i in (3, 4)]
    )
    assert [r.points[0].id for r in batch] == [3, 4]
    # A query by a point's id: its nearest neighbours (itself first).
    assert c.query_points(name, query=42, limit=1).points[0].id == 42

    # Scroll the whole collection in pages.
    seen: list[int] = []
    offset = None
    while True:
        page, offset = c.scroll(name, limit=2500, offset=offset, with_payload=False)
        seen += [int(p.id) for p in page]
        if offset is None:
            break
    assert sorted(seen) == list(range(N))

    blue = m.Filter(must=[m.FieldCondition(key="tag", match=m.MatchValue(value="blue"))])
    assert c.count(name, count_filter=blue).count == N // 3
    c.delete(name, points_selector=m.FilterSelector(filter=blue), wait=True)
    assert c.count(name).count == N - N // 3
    assert c.count(name, count_filter=blue).count == 0
    c.delete(name, points_selector=m.PointIdsList(points=[0, 1]), wait=True)
    assert [r.id for r in c.retrieve(name, [0, 1, 3])] == [3]

    # Payload: set, overwrite, delete a key, clear.
    c.set_payload(name, payload={"note": "hi"}, points=[3])
    assert c.retrieve(name, [3])[0].payload == {**payloads[3], "note": "hi"}
    c.overwrite_payload(name, payload={"only": 1}, points=[3])
    assert c.retrieve(name, [3])[0].payload == {"only": 1}
    c.delete_payload(name, keys=["only"], points=[3])
    c.set_payload(name, payload={"x": 1}, points=[4])
    c.clear_payload(name, points_selector=m.PointIdsList(points=[4]))
    assert c.retrieve(name, [3, 4]) and all(not r.payload for r in c.retrieve(name, [3, 4]))

    # Aliases: an alias reads like the collection.
    alias = f"{name}-live"
    c.update_collection_aliases(
        change_aliases_operations=[
            m.CreateAliasOperation(
                create_alias=m.CreateAlias(collection_name=name, alias_name=alias)
            )
        ]
    )
    assert alias in [a.alias_name for a in c.get_aliases().aliases]
    assert [a.alias_name for a in c.get_collection_aliases(name).aliases] == [alias]
    assert c.count(alias).count == c.count(name).count
    c.update_collection_aliases(
        change_aliases_operations=[
            m.DeleteAliasOperation(delete_alias=m.DeleteAlias(alias_name=alias))
        ]
    )
    assert alias not in [a.alias_name for a in c.get_aliases().aliases]

    # Mistakes answer Qdrant's statuses, in Qdrant's error shape.
    with pytest.raises(UnexpectedResponse) as e:
        c.upsert(name, [m.PointStruct(id=1, vector=[0.1, 0.2])])
    assert e.value.status_code == 400 and b"dimension" in e.value.content
    with pytest.raises(UnexpectedResponse) as e:
        c.create_collection(name, vectors_config=m.VectorParams(size=4, distance=m.Distance.DOT))
    assert e.value.status_code == 409
    with pytest.raises(UnexpectedResponse) as e:
        c.count(f"{name}-nope")
    assert e.value.status_code == 404 and json.loads(e.value.content)["status"]["error"]

    # Named vectors.
    named = f"{name}-named"
    if c.collection_exists(named):
        c.delete_collection(named)
    c.create_collection(
        named,
        vectors_config={
            "title": m.VectorParams(size=4, distance=m.Distance.DOT),
            "body": m.VectorParams(size=3, distance=m.Distance.EUCLID),
        },
    )
    c.upsert(
        named,
        [
            m.PointStruct(id=1, vector={"title": [1, 0, 0, 0], "body": [0, 0, 1]}),
            m.PointStruct(id=2, vector={"title": [0, 1, 0, 0], "body": [5, 5, 5]}),
        ],
    )
    assert c.query_points(named, query=[0, 0.9, 0, 0], using="title", limit=1).points[0].id == 2
    assert c.query_points(named, query=[0, 0, 1.1], using="body", limit=1).points[0].id == 1
    assert c.delete_collection(named)
    assert not c.collection_exists(named)


def test_the_official_client_gets_qdrant_answers_from_the_embedded_engine(
    embedded: Gw, data: tuple[np.ndarray, list[dict[str, Any]]]
) -> None:
    x, payloads = data
    with warnings.catch_warnings():
        c = embedded.client()
        client_suite(c, "suite", x, payloads, f"{embedded.proc.url}/qdrant")
    # The root answers as Qdrant's does, with a version the client accepts.
    with urllib.request.urlopen(f"{embedded.proc.url}/qdrant/") as r:
        root = json.loads(r.read())
    assert root["title"] == "qdrant - vector search engine" and root["engine"] == "embedded"
    assert is_compatible(importlib.metadata.version("qdrant-client"), root["version"])
    with urllib.request.urlopen(f"{embedded.proc.url}/qdrant/readyz") as r:
        assert r.status == 200


def test_a_restart_keeps_every_point(
    tmp_path: Path, data: tuple[np.ndarray, list[dict[str, Any]]]
) -> None:
    x, payloads = data
    gw = start(tmp_path, "restart", config(flush_interval=3600))
    q = x[123] + 0.01
    with running(gw.proc):
        c = gw.client()
        c.create_collection(
            "keep", vectors_config=m.VectorParams(size=DIM, distance=m.Distance.COSINE)
        )
        c.upload_points(
            "keep",
            [m.PointStruct(id=i, vector=x[i].tolist(), payload=payloads[i]) for i in range(N)],
            batch_size=2000,
        )
        before = [p.id for p in c.query_points("keep", query=q.tolist(), limit=10).points]
        c.close()
    # No scheduled flush ran (an hour apart): what is on disk is what shutdown flushed.
    assert gw.proc.stop(signal.SIGTERM) == 0
    # An older version's grants file is moved into the store at start.
    old = gw.work / "data" / "aistack" / "vectors" / "grants.json"
    old.write_text(json.dumps({"keep": ["reader"]}))
    gw2 = Gw(start_gateway(tmp_path, config(flush_interval=3600), name="restart"), {}, gw.work)
    with running(gw2.proc):
        c = gw2.client()
        assert c.count("keep").count == N
        assert [p.id for p in c.query_points("keep", query=q.tolist(), limit=10).points] == before
        assert c.retrieve("keep", [9999])[0].payload == payloads[9999]
        req = urllib.request.Request(
            f"{gw2.proc.url}/admin/api/vectors", headers={"authorization": f"Bearer {MASTER}"}
        )
        with urllib.request.urlopen(req) as r:
            listed = {x["name"]: x for x in json.loads(r.read())["collections"]}
        assert listed["keep"]["shared_with"] == ["reader"]
        assert not old.exists() and old.with_suffix(".json.imported").is_file()


def test_a_crash_keeps_every_acknowledged_point(tmp_path: Path) -> None:
    """SIGKILL, no flush at all (an hour apart): the engine's write-ahead log has every
    write that was answered, deletes and payload changes included."""
    gw = start(tmp_path, "crash", config(flush_interval=3600))
    rng = np.random.default_rng(21)
    x = rng.normal(size=(3000, 64)).astype(np.float32)
    with running(gw.proc):
        c = gw.client()
        c.create_collection("wal", vectors_config=m.VectorParams(size=64, distance=m.Distance.DOT))
        for start_at in range(0, 3000, 500):
            c.upsert("wal", [m.PointStruct(id=i, vector=x[i].tolist(), payload={"i": i})
                             for i in range(start_at, start_at + 500)], wait=True)  # fmt: skip
        c.delete("wal", points_selector=m.PointIdsList(points=[0, 1, 2]), wait=True)
        c.set_payload("wal", payload={"seen": True}, points=[10], wait=True)
        before = [p.id for p in c.query_points("wal", query=x[99].tolist(), limit=5).points]
        c.close()
        assert gw.proc.stop(signal.SIGKILL) != 0
    gw2 = Gw(start_gateway(tmp_path, config(flush_interval=3600), name="crash"), {}, gw.work)
    with running(gw2.proc):
        c = gw2.client()
        assert c.count("wal").count == 3000 - 3
        assert c.retrieve("wal", [0, 1, 2]) == []
        assert c.retrieve("wal", [10])[0].payload == {"i": 10, "seen": True}
        assert [p.id for p in c.query_points("wal", query=x[99].tolist(), limit=5).points] == before


def test_the_embedded_store_lives_in_the_configured_data_dir(tmp_path: Path) -> None:
    """No `vectors.path`: the shards go in `data_dir/vectors` (relative to the config
    file), not under $XDG_DATA_HOME, and the commands that open the store find them."""
    # The CLI looks for a gateway at the config's port: nothing listens there once it stops.
    cfg = {**config(), "data_dir": "state", "server": {"port": free_port()}}
    gw = start(tmp_path, "datadir", cfg)
    with running(gw.proc):
        c = gw.client()
        c.create_collection("here", vectors_config=m.VectorParams(size=2, distance=m.Distance.DOT))
        c.upsert("here", [m.PointStruct(id=i, vector=[i, 1]) for i in range(3)])
        c.close()
    assert gw.proc.stop(signal.SIGTERM) == 0
    assert (gw.work / "state" / "vectors" / "collections" / "here" / "meta.json").is_file()
    assert not (gw.work / "data" / "aistack" / "vectors").exists()  # $XDG_DATA_HOME's
    # With no gateway running, `aistack vectors list` opens the same store itself.
    out = aistack_cli(
        "vectors", "list", "--json",
        config=gw.work / "aistack.yaml", env={"XDG_DATA_HOME": str(gw.work / "data")},
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    assert {r["name"]: r["points"] for r in json.loads(out.stdout)["collections"]} == {"here": 3}


def test_each_key_sees_only_its_own_collections_and_the_admin_sees_all(embedded: Gw) -> None:
    a, b = embedded.client(embedded.keys["appa"]), embedded.client(embedded.keys["appb"])
    admin = embedded.client()
    for c, base in ((a, 0.0), (b, 10.0)):
        if c.collection_exists("docs"):
            c.delete_collection("docs")
        c.create_collection(
            "docs", vectors_config=m.VectorParams(size=2, distance=m.Distance.EUCLID)
        )
        c.upsert(
            "docs",
            [m.PointStruct(id=i, vector=[base + i, 0], payload={"k": base}) for i in range(3)],
        )
    for c, base in ((a, 0.0), (b, 10.0)):
        assert [x.name for x in c.get_collections().collections] == ["docs"]
        assert {p.payload["k"] for p in c.scroll("docs")[0]} == {base}  # type: ignore[index]
        hit = c.query_points("docs", query=[0, 0], limit=1, with_payload=True).points[0]
        assert hit.payload == {"k": base}
    # The other app's physical name leads nowhere: it is mapped into the caller's space.
    for name in ("appb__docs", "../appb__docs"):
        with pytest.raises(UnexpectedResponse) as e:
            a.count(name)
        assert e.value.status_code in (400, 404)
    with pytest.raises(UnexpectedResponse) as e:
        a.delete_collection("appb__docs") or a.count("appb__docs")
    assert e.value.status_code == 404
    assert b.count("docs").count == 3
    names = {x.name for x in admin.get_collections().collections}
    assert {"appa__docs", "appb__docs"} <= names
    assert admin.count("appb__docs").count == 3
    # Aliases are per app too.
    a.update_collection_aliases(
        change_aliases_operations=[
            m.CreateAliasOperation(
                create_alias=m.CreateAlias(collection_name="docs", alias_name="cur")
            )
        ]
    )
    assert [x.alias_name for x in a.get_aliases().aliases] == ["cur"]
    assert b.get_aliases().aliases == []
    assert "appa__cur" in [x.alias_name for x in admin.get_aliases().aliases]


def test_an_unknown_key_gets_a_qdrant_401(embedded: Gw) -> None:
    req = urllib.request.Request(
        f"{embedded.proc.url}/qdrant/collections", headers={"api-key": "nope"}
    )
    with pytest.raises(urllib.error.HTTPError) as e:
        urllib.request.urlopen(req)
    assert e.value.code == 401
    assert "invalid API key" in json.loads(e.value.read())["status"]["error"]


def test_a_document_is_embedded_with_aistacks_own_models(embedded: Gw) -> None:
    body = json.dumps({"model": LOCAL_MODEL, "input": ["x"]}).encode()
    req = urllib.request.Request(
        f"{embedded.proc.url}/api/embed", body, headers={"authorization": f"Bearer {MASTER}"}
    )
    with urllib.request.urlopen(req, timeout=120) as r:
        dim = len(json.loads(r.read())["embeddings"][0])
    c = embedded.client(embedded.keys["appa"], cloud_inference=True)
    if c.collection_exists("texts"):
        c.delete_collection("texts")
    c.create_collection(
        "texts", vectors_config=m.VectorParams(size=dim, distance=m.Distance.COSINE)
    )
    docs = ["The cat sat on the warm windowsill.", "Quarterly tax returns are due in April.",
            "A recipe for sourdough bread with a long rise."]  # fmt: skip
    c.upsert(
        "texts",
        [
            m.PointStruct(id=i, vector=m.Document(text=t, model=LOCAL_MODEL), payload={"t": t})
            for i, t in enumerate(docs)
        ],
    )
    hit = c.query_points(
        "texts", query=m.Document(text=docs[1], model=LOCAL_MODEL), limit=1, with_payload=True
    ).points[0]
    assert hit.id == 1 and hit.payload == {"t": docs[1]}
    # The size is checked against the collection.
    c.create_collection("small", vectors_config=m.VectorParams(size=3, distance=m.Distance.COSINE))
    try:
        with pytest.raises(UnexpectedResponse) as e:
            c.upsert("small", [m.PointStruct(id=1, vector=m.Document(text="x", model=LOCAL_MODEL))])
        assert e.value.status_code == 400 and b"dimensions" in e.value.content
    finally:
        c.delete_collection("small")


def test_the_qdrant_engine_proxies_with_names_rewritten(
    proxied: Gw, embedded: Gw, data: tuple[np.ndarray, list[dict[str, Any]]]
) -> None:
    x, payloads = data
    client_suite(proxied.client(), "proxied", x, payloads, f"{proxied.proc.url}/qdrant")
    app = proxied.client(proxied.keys["appp"])
    if app.collection_exists("notes"):
        app.delete_collection("notes")
    app.create_collection("notes", vectors_config=m.VectorParams(size=2, distance=m.Distance.DOT))
    app.upsert("notes", [m.PointStruct(id=1, vector=[1, 2])])
    assert [c.name for c in app.get_collections().collections] == ["notes"]
    # On the wire to the server, the name is the app's physical one.
    upstream = embedded.client()
    assert upstream.count("appp__notes").count == 1
    with pytest.raises(UnexpectedResponse) as e:
        app.count("missing")
    assert e.value.status_code == 404 and b"appp__" not in e.value.content


def test_a_shared_collection_is_read_only_for_the_app_it_is_shared_with(embedded: Gw) -> None:
    a, b = embedded.client(embedded.keys["appa"]), embedded.client(embedded.keys["appb"])
    if a.collection_exists("shared"):
        a.delete_collection("shared")
    a.create_collection("shared", vectors_config=m.VectorParams(size=2, distance=m.Distance.DOT))
    a.upsert("shared", [m.PointStruct(id=1, vector=[1, 1], payload={"owner": "a"})])
    with pytest.raises(UnexpectedResponse):
        b.count("appa__shared")
    out = aistack_cli(
        "vectors", "grant", "appa__shared", "appb", "--json",
        config=embedded.work / "aistack.yaml", env={"XDG_DATA_HOME": str(embedded.work / "data")},
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout)["grants"] == {"appa__shared": ["appb"]}
    # The grant is in the store; the gateway notices the access stamp move (0.5 s).
    deadline = time.monotonic() + 30
    while True:
        try:
            assert b.count("appa__shared").count == 1
            break
        except UnexpectedResponse:
            assert time.monotonic() < deadline, "the grant never took effect"
            time.sleep(0.2)
    assert "appa__shared" in [c.name for c in b.get_collections().collections]
    hit = b.query_points("appa__shared", query=[1, 0], limit=1, with_payload=True).points[0]
    assert hit.payload == {"owner": "a"}
    for write in (
        lambda: b.upsert("appa__shared", [m.PointStruct(id=2, vector=[0, 1])]),
        lambda: b.delete_collection("appa__shared"),
    ):
        with pytest.raises(UnexpectedResponse) as e:
            write()
        assert e.value.status_code == 403 and b"reading only" in e.value.content
    assert a.count("shared").count == 1


def test_a_grant_made_on_one_replica_holds_on_the_other_at_once(tmp_path: Path) -> None:
    """Two gateways on one PostgreSQL (each with an embedded store of its own, as each
    could front the same Qdrant cluster): a grant made through one replica's admin API
    lets the app read on the other without a restart, and a revoke ends it there too."""
    from tests.services import postgres_database

    with postgres_database() as pg:
        cfg = {**config(), "backends": [], "database_url": pg}
        path = write_config(tmp_path / "cli", cfg)
        up = aistack_cli("db", "upgrade", config=path)
        assert up.returncode == 0, up.stderr
        reader = create_key(path, "--name", "reader")
        with (
            running(start_gateway(tmp_path, cfg, name="one")) as one,
            running(start_gateway(tmp_path, cfg, name="two")) as two,
        ):
            admin_two = QdrantClient(url=two.url, prefix="qdrant", api_key=MASTER,
                                     check_compatibility=False)  # fmt: skip
            admin_two.create_collection(
                "owner__lib", vectors_config=m.VectorParams(size=2, distance=m.Distance.DOT)
            )
            admin_two.upsert("owner__lib", [m.PointStruct(id=7, vector=[1, 0])])
            r = QdrantClient(url=two.url, prefix="qdrant", api_key=reader,
                             check_compatibility=False)  # fmt: skip
            with pytest.raises(UnexpectedResponse) as e:
                r.count("owner__lib")
            assert e.value.status_code == 404

            def grant(allow: bool) -> Any:
                body = json.dumps({"collection": "owner__lib", "app": "reader", "allow": allow})
                req = urllib.request.Request(
                    f"{one.url}/admin/api/vectors/grants", body.encode(),
                    headers={"authorization": f"Bearer {MASTER}"},
                )  # fmt: skip
                with urllib.request.urlopen(req) as resp:
                    return json.loads(resp.read())["grants"]

            assert grant(True) == {"owner__lib": ["reader"]}
            deadline = time.monotonic() + 30
            while True:  # the other replica's watch reads the access stamp every 0.5 s
                try:
                    assert r.count("owner__lib").count == 1
                    break
                except UnexpectedResponse:
                    assert time.monotonic() < deadline, "replica two never saw the grant"
                    time.sleep(0.2)
            with pytest.raises(UnexpectedResponse) as e:
                r.upsert("owner__lib", [m.PointStruct(id=8, vector=[0, 1])])
            assert e.value.status_code == 403

            def shared_on_two() -> Any:
                req = urllib.request.Request(
                    f"{two.url}/admin/api/vectors", headers={"authorization": f"Bearer {MASTER}"}
                )
                with urllib.request.urlopen(req) as resp:
                    listed = {c["name"]: c for c in json.loads(resp.read())["collections"]}
                return listed["owner__lib"]["shared_with"]

            assert shared_on_two() == ["reader"]
            assert grant(False) == {}
            deadline = time.monotonic() + 30
            while True:
                try:
                    r.count("owner__lib")
                except UnexpectedResponse as gone:
                    assert gone.status_code == 404
                    break
                assert time.monotonic() < deadline, "replica two kept the revoked grant"
                time.sleep(0.2)
            assert shared_on_two() == []


def test_quotas_refuse_more_collections_and_points_with_a_403(embedded: Gw) -> None:
    q = embedded.client(embedded.keys["appq"])
    for c in q.get_collections().collections:
        q.delete_collection(c.name)
    q.create_collection("one", vectors_config=m.VectorParams(size=2, distance=m.Distance.DOT))
    with pytest.raises(UnexpectedResponse) as e:
        q.create_collection("two", vectors_config=m.VectorParams(size=2, distance=m.Distance.DOT))
    assert e.value.status_code == 403 and b"1 collections" in e.value.content
    q.upsert("one", [m.PointStruct(id=i, vector=[i, 1]) for i in range(8)])
    q.upsert("one", [m.PointStruct(id=i, vector=[i, 2]) for i in range(10)])  # 2 new: at the limit
    q.upsert("one", [m.PointStruct(id=i, vector=[i, 3]) for i in range(5)])  # overwrites only
    with pytest.raises(UnexpectedResponse) as e:
        q.upsert("one", [m.PointStruct(id=10, vector=[1, 1])])
    assert e.value.status_code == 403 and b"10 points" in e.value.content
    assert q.count("one").count == 10


def test_a_disk_quota_refuses_the_upsert_that_finds_it_used_up(embedded: Gw) -> None:
    """appd may use 1 MB: upserts go through until its collections take that much disk
    (sizes are refreshed every few seconds), then each is a 403 in Qdrant's shape."""
    d = embedded.client(embedded.keys["appd"])
    if d.collection_exists("big"):
        d.delete_collection("big")
    d.create_collection("big", vectors_config=m.VectorParams(size=64, distance=m.Distance.DOT))
    rng = np.random.default_rng(11)
    deadline = time.monotonic() + 120
    n = 0
    while True:
        pts = [m.PointStruct(id=n + i, vector=rng.normal(size=64).tolist()) for i in range(500)]
        try:
            d.upsert("big", pts)
        except UnexpectedResponse as e:
            refused = e
            break
        n += 500
        assert time.monotonic() < deadline, f"{n} points and no disk quota"
        time.sleep(0.5)
    assert refused.status_code == 403
    body = json.loads(refused.content)
    assert set(body) == {"status", "time"}
    msg = body["status"]["error"]
    assert "quota" in msg and "'appd'" in msg and "1 MB of disk" in msg, msg
    assert n >= 500  # the first upserts were within the quota
    assert d.count("big").count == n  # the refused upsert wrote nothing
    # Reads go on; another app's writes are not limited by appd's disk.
    assert len(d.query_points("big", query=[1.0] * 64, limit=3).points) == 3
    b = embedded.client(embedded.keys["appb"])
    if not b.collection_exists("free"):
        b.create_collection("free", vectors_config=m.VectorParams(size=2, distance=m.Distance.DOT))
    b.upsert("free", [m.PointStruct(id=1, vector=[1, 0])])
    d.delete_collection("big")


def test_vector_operations_count_against_rate_limits_and_go_in_the_ledger(embedded: Gw) -> None:
    r = embedded.client(embedded.keys["appr"])
    r.get_collections()
    # A 429 with Retry-After in Qdrant's shape: the client raises its own rate-limit error.
    with pytest.raises(ResourceExhaustedResponse) as e:
        r.get_collections()
    assert "1 requests per minute" in e.value.message and e.value.retry_after_s >= 1
    req = urllib.request.Request(
        f"{embedded.proc.url}/admin/api/requests?app=appa&limit=1000",
        headers={"authorization": f"Bearer {MASTER}"},
    )
    with urllib.request.urlopen(req) as resp:
        rows = json.loads(resp.read())["requests"]
    # One row per operation: its route names it, its model is the collection.
    vector_rows = [x for x in rows if x["route"].startswith("qdrant.")]
    assert {("qdrant.upsert", "docs"), ("qdrant.query", "docs")} <= {
        (x["route"], x["model"]) for x in vector_rows
    }
    assert all(x["dialect"] == "qdrant" for x in vector_rows)
    # With the points each wrote or returned: appa's docs got 3 points in one upsert,
    # each of its queries there asked for the nearest one, and a scroll returned all 3.
    by_route: dict[str, set[int]] = {}
    for x in vector_rows:
        if x["model"] == "docs":
            by_route.setdefault(x["route"], set()).add(x["points"])
    assert by_route["qdrant.upsert"] == {3} and by_route["qdrant.query"] == {1}
    assert by_route["qdrant.scroll"] == {3}
    assert all(x["points"] == 0 for x in vector_rows if x["route"] == "qdrant.list_collections")
    # The usage report sums them per key (the admin API's rows are not in the ledger).
    req = urllib.request.Request(
        f"{embedded.proc.url}/admin/api/usage?by=key&since=1d&format=csv",
        headers={"authorization": f"Bearer {MASTER}"},
    )
    with urllib.request.urlopen(req) as resp:
        lines = resp.read().decode().splitlines()
    head = lines[0].split(",")
    report = [dict(zip(head, line.split(","), strict=True)) for line in lines[1:]]
    summed = sum(int(r["points"]) for r in report if r["app"] == "appa")
    assert summed == sum(x["points"] for x in rows) >= 3 + 1 + 3
    # The embeddings made for documents are recorded like any embedding request.
    assert any(x["route"] == "qdrant.embed" and x["model"] == LOCAL_MODEL for x in rows)


def test_snapshot_and_restore_round_trip_10k_points(
    embedded: Gw, tmp_path: Path, data: tuple[np.ndarray, list[dict[str, Any]]]
) -> None:
    x, payloads = data
    c = embedded.client()
    if c.collection_exists("snap"):
        c.delete_collection("snap")
    c.create_collection("snap", vectors_config=m.VectorParams(size=DIM, distance=m.Distance.COSINE))
    c.upload_points(
        "snap",
        [m.PointStruct(id=i, vector=x[i].tolist(), payload=payloads[i]) for i in range(N)],
        batch_size=2000,
    )
    q = x[7].tolist()
    before = [
        (p.id, p.payload)
        for p in c.query_points("snap", query=q, limit=10, with_payload=True).points
    ]
    env = {"AISTACK_MASTER_KEY": MASTER, "XDG_DATA_HOME": str(embedded.work / "data")}

    def cli(*args: str) -> Any:
        out = aistack_cli(
            "vectors", *args, "--gateway", embedded.proc.url, "--json",
            config=embedded.work / "aistack.yaml", env=env, timeout=300,
        )  # fmt: skip
        assert out.returncode == 0, out.stderr
        return json.loads(out.stdout)

    made = cli("snapshot", "snap", "--dir", str(tmp_path / "snaps"))["snapshots"]
    assert len(made) == 1 and parse_name(Path(made[0]).name)[0] == "snap"  # type: ignore[index]
    # Into a new collection, and over the existing one after a loss.
    assert cli("restore", made[0], "snap-copy") == {"collection": "snap-copy", "points": N}
    c.delete("snap", points_selector=m.FilterSelector(filter=m.Filter()), wait=True)
    assert c.count("snap").count == 0
    assert cli("restore", made[0], "snap")["points"] == N
    for name in ("snap", "snap-copy"):
        assert c.count(name).count == N
        got = c.query_points(name, query=q, limit=10, with_payload=True).points
        assert [(p.id, p.payload) for p in got] == before
    stats = aistack_cli(
        "vectors", "stats", "--gateway", embedded.proc.url,
        config=embedded.work / "aistack.yaml", env=env,
    )  # fmt: skip
    assert stats.returncode == 0 and "engine: embedded" in stats.stdout, stats.stderr
    assert any(line.split()[:1] == ["-"] for line in stats.stdout.splitlines())  # admin's
    doctor = aistack_cli(
        "doctor", "--json", "--prompts", "none", "--no-embedded", "--gateway", embedded.proc.url,
        config=embedded.work / "aistack.yaml", env=env, timeout=300,
    )  # fmt: skip
    found = {(f["check"], f["status"]) for f in json.loads(doctor.stdout)["findings"]}
    assert {("vectors", "PASS"), ("vectors disk", "PASS")} <= found, doctor.stdout
    listed = {r["name"]: r for r in cli("list")["collections"]}
    assert listed["snap-copy"]["points"] == N and listed["snap-copy"]["disk_bytes"] > 0
    assert listed["snap"]["app"] == "" and listed["snap"]["collection"] == "snap"
    c.delete_collection("snap-copy")


def _multipart(field: str, filename: str, data: bytes) -> tuple[bytes, str]:
    boundary = "test-boundary-0123456789"
    body = (
        (
            f'--{boundary}\r\nContent-Disposition: form-data; name="{field}"; '
            f'filename="{filename}"\r\nContent-Type: application/octet-stream\r\n\r\n'
        ).encode()
        + data
        + f"\r\n--{boundary}--\r\n".encode()
    )
    return body, f"multipart/form-data; boundary={boundary}"


def test_qdrants_snapshot_api_is_served_for_the_admin(embedded: Gw) -> None:
    """The official client's snapshot calls (create, list, recover, delete), the file's
    download and upload, on the embedded engine; for the master key only."""
    c = embedded.client()
    for name in ("snapapi", "snapapi-up"):
        if c.collection_exists(name):
            c.delete_collection(name)
    c.create_collection("snapapi", vectors_config=m.VectorParams(size=8, distance=m.Distance.DOT))
    rng = np.random.default_rng(8)
    c.upsert("snapapi", [m.PointStruct(id=i, vector=rng.normal(size=8).tolist(),
                                       payload={"i": i}) for i in range(300)])  # fmt: skip
    made = c.create_snapshot("snapapi")
    assert made is not None and made.size > 0 and made.checksum
    assert [x.name for x in c.list_snapshots("snapapi")] == [made.name]
    url = f"{embedded.proc.url}/qdrant/collections/snapapi/snapshots/{made.name}"
    with urllib.request.urlopen(urllib.request.Request(url, headers={"api-key": MASTER})) as r:
        assert r.headers["content-type"] == "application/octet-stream"
        data = r.read()
    assert len(data) == made.size and hashlib.sha256(data).hexdigest() == made.checksum
    # Recover from the server's own file, over points lost meanwhile.
    c.delete("snapapi", points_selector=m.FilterSelector(filter=m.Filter()), wait=True)
    assert c.count("snapapi").count == 0
    where = embedded.work / "data" / "aistack" / "vectors" / "snapshots" / "snapapi" / made.name
    assert c.recover_snapshot("snapapi", location=where.as_uri(), checksum=made.checksum)
    assert c.count("snapapi").count == 300
    with pytest.raises(UnexpectedResponse) as e:  # a URL to fetch is not followed
        c.recover_snapshot("snapapi", location="http://127.0.0.1:9/x.snapshot")
    assert e.value.status_code == 400
    # An uploaded file makes a new collection.
    body, ctype = _multipart("snapshot", made.name, data)
    req = urllib.request.Request(
        f"{embedded.proc.url}/qdrant/collections/snapapi-up/snapshots/upload?priority=snapshot",
        body, headers={"api-key": MASTER, "content-type": ctype}, method="POST",
    )  # fmt: skip
    with urllib.request.urlopen(req) as r:
        assert json.loads(r.read())["result"] is True
    assert c.count("snapapi-up").count == 300
    assert c.retrieve("snapapi-up", [299])[0].payload == {"i": 299}
    # An app's key may not snapshot, not even its own collections.
    a = embedded.client(embedded.keys["appa"])
    if not a.collection_exists("mine"):
        a.create_collection("mine", vectors_config=m.VectorParams(size=2, distance=m.Distance.DOT))
    with pytest.raises(UnexpectedResponse) as e:
        a.create_snapshot("mine")
    assert e.value.status_code == 403 and b"admin" in e.value.content
    assert c.delete_snapshot("snapapi", made.name)
    assert c.list_snapshots("snapapi") == []
    with pytest.raises(UnexpectedResponse) as e:
        c.delete_snapshot("snapapi", made.name)
    assert e.value.status_code == 404
    c.delete_collection("snapapi-up")


def test_snapshots_in_proxy_mode_go_through_qdrants_snapshot_api(
    proxied: Gw, embedded: Gw, tmp_path: Path, data: tuple[np.ndarray, list[dict[str, Any]]]
) -> None:
    """`aistack vectors snapshot|restore` on a gateway with engine: qdrant: the server
    makes the snapshot, aistack downloads it (and deletes the server's copy), and a
    restore uploads it to the server."""
    x, payloads = data
    n = 2000
    c = proxied.client()
    if c.collection_exists("proxsnap"):
        c.delete_collection("proxsnap")
    c.create_collection(
        "proxsnap", vectors_config=m.VectorParams(size=DIM, distance=m.Distance.COSINE)
    )
    c.upload_points(
        "proxsnap",
        [m.PointStruct(id=i, vector=x[i].tolist(), payload=payloads[i]) for i in range(n)],
        batch_size=1000,
    )
    q = x[11].tolist()
    before = [(p.id, p.payload) for p in c.query_points("proxsnap", query=q, limit=5,
                                                         with_payload=True).points]  # fmt: skip
    env = {"AISTACK_MASTER_KEY": MASTER, "XDG_DATA_HOME": str(proxied.work / "data"),
           "UPSTREAM_KEY": MASTER}  # fmt: skip

    def cli(*args: str) -> Any:
        out = aistack_cli(
            "vectors", *args, "--gateway", proxied.proc.url, "--json",
            config=proxied.work / "aistack.yaml", env=env, timeout=300,
        )  # fmt: skip
        assert out.returncode == 0, out.stderr
        return json.loads(out.stdout)

    (made,) = cli("snapshot", "proxsnap", "--dir", str(tmp_path / "snaps"))["snapshots"]
    assert parse_name(Path(made).name)[0] == "proxsnap"  # type: ignore[index]
    assert Path(made).stat().st_size > 0
    # The server's copy is gone: the file in --dir is the backup.
    assert embedded.client().list_snapshots("proxsnap") == []
    c.delete("proxsnap", points_selector=m.FilterSelector(filter=m.Filter()), wait=True)
    assert c.count("proxsnap").count == 0
    assert cli("restore", made, "proxsnap") == {"collection": "proxsnap", "points": n}
    assert cli("restore", made, "proxsnap-copy")["points"] == n
    for name in ("proxsnap", "proxsnap-copy"):
        got = c.query_points(name, query=q, limit=5, with_payload=True).points
        assert [(p.id, p.payload) for p in got] == before
    assert embedded.client().count("proxsnap-copy").count == n  # restored on the server
    # An app behind the proxy may not snapshot either.
    app = proxied.client(proxied.keys["appp"])
    with pytest.raises(UnexpectedResponse) as e:
        app.create_snapshot("notes")
    assert e.value.status_code == 403
    c.delete_collection("proxsnap-copy")


def test_the_backup_schedule_works_in_proxy_mode(tmp_path: Path) -> None:
    """A proxy gateway with vectors.backup.dir snapshots every collection of the server
    through Qdrant's snapshot API on its first check, and prunes the directory to the
    hourly/daily/weekly rotation."""
    up = start_gateway(tmp_path, {**config(), "backends": []}, name="gfs-upstream")
    backup = tmp_path / "backups"
    backup.mkdir()
    now = datetime.now(UTC).replace(microsecond=0)
    seeded = [now - timedelta(hours=h) for h in (1, 26, 27, 24 * 8, 24 * 40)]
    with running(up):
        admin = QdrantClient(url=up.url, prefix="qdrant", api_key=MASTER,
                             check_compatibility=False)  # fmt: skip
        names = ("g1", "app__g2")
        for i, name in enumerate(names):
            admin.create_collection(
                name, vectors_config=m.VectorParams(size=2, distance=m.Distance.DOT)
            )
            admin.upsert(name, [m.PointStruct(id=j, vector=[j, i]) for j in range(3 + i)])
            for t in seeded:
                snapshot_file(backup, name, t).write_bytes(b"an older snapshot")
        cfg = {
            **config(engine="qdrant", url=f"{up.url}/qdrant", api_key=MASTER,
                     backup={"dir": str(backup), "hourly": 2, "daily": 2, "weekly": 1}),
            "backends": [],
        }  # fmt: skip
        with running(start_gateway(tmp_path, cfg, name="gfs-proxy")) as proxy:
            deadline = time.monotonic() + 120
            while True:
                files = {f.name: parse_name(f.name) for f in backup.glob("*.snapshot")}
                stamps: dict[str, set[datetime]] = {}
                for parsed in files.values():
                    assert parsed is not None
                    stamps.setdefault(parsed[0], set()).add(parsed[1])
                fresh = {n for n, ts in stamps.items() if any(t >= now for t in ts)}
                pruned = all(min(ts) > now - timedelta(days=8) for ts in stamps.values())
                if fresh == set(names) and pruned:
                    break
                assert time.monotonic() < deadline, proxy.output()[-3000:]
                time.sleep(0.5)
        for name in names:
            ts = stamps[name]
            assert ts == retained(ts, 2, 2, 1)  # exactly what the rotation keeps
            (new,) = [t for t in ts if t >= now]
            restored = Path(snapshot_file(backup, name, new))
            with tarfile.open(restored) as tar:  # the server's own file, downloaded
                assert "meta.json" in tar.getnames()
            assert admin.list_snapshots(name) == []  # none left on the server


def test_retention_keeps_the_newest_per_hour_day_and_week() -> None:
    end = datetime(2026, 11, 30, 23, 30, tzinfo=UTC)  # a Monday
    every_hour = [end - timedelta(hours=h) for h in range(24 * 30)]
    keep = retained(every_hour, hourly=24, daily=7, weekly=4)
    hours = {t for t in every_hour if end - t < timedelta(hours=24)}
    days = {t for t in every_hour if t.hour == 23 and end - t < timedelta(days=7)}
    weeks = {max(t for t in every_hour if t.isocalendar()[:2] == w) for w in
             sorted({t.isocalendar()[:2] for t in every_hour})[-4:]}  # fmt: skip
    assert keep == hours | days | weeks
    # 24 hours, 6 more days, 4 weeks less this week (its newest is the newest hour) and
    # last week (its newest, Sunday 23:30, is one of the days).
    assert len(keep) == 24 + 6 + 2
    assert retained(every_hour, 0, 0, 0) == set()


def test_scheduled_snapshots_are_pruned_to_the_rotation(tmp_path: Path) -> None:
    from aistack.config import VectorBackupConfig
    from aistack.vectors.snapshots import prune, snapshot_file

    start_at = datetime(2026, 11, 1, tzinfo=UTC)
    for h in range(0, 24 * 10, 6):
        for name in ("docs", "a__b"):
            snapshot_file(tmp_path, name, start_at + timedelta(hours=h)).write_bytes(b"x")
    gone = prune(tmp_path, VectorBackupConfig(dir=str(tmp_path), hourly=2, daily=3, weekly=2))
    left = sorted(parse_name(f.name) for f in tmp_path.glob("*.snapshot"))  # type: ignore[type-var]
    # Hours: the 10th 18:00 and 12:00; days: the 10th, 9th and 8th at 18:00; ISO weeks:
    # the 10th's (already in) and the week before's newest, Sunday the 8th (already in).
    kept = [datetime(2026, 11, d, h, tzinfo=UTC) for d, h in ((8, 18), (9, 18), (10, 12), (10, 18))]
    assert left == sorted((n, t) for n in ("docs", "a__b") for t in kept)
    assert len(gone) == 2 * (40 - 4)


def test_the_index_is_built_in_the_background_once_writes_pause(tmp_path: Path) -> None:
    gw = start(tmp_path, "optimize", config(optimize_threshold=2000, optimize_idle=0.5))
    rng = np.random.default_rng(3)
    x = rng.normal(size=(3000, 16)).astype(np.float32)
    with running(gw.proc):
        c = gw.client()
        c.create_collection(
            "big",
            vectors_config=m.VectorParams(size=16, distance=m.Distance.COSINE),
            optimizers_config=m.OptimizersConfigDiff(indexing_threshold=10),  # KB: index it all
        )
        c.upsert("big", [m.PointStruct(id=i, vector=x[i].tolist()) for i in range(3000)])
        deadline = time.monotonic() + 240
        while c.get_collection("big").indexed_vectors_count < 3000:
            assert time.monotonic() < deadline, gw.proc.output()[-2000:]
            time.sleep(0.2)
        assert "in the background" in gw.proc.output()
        assert c.count("big").count == 3000
        assert c.query_points("big", query=x[5].tolist(), limit=1).points[0].id == 5


def test_writes_made_while_the_index_is_built_are_kept(tmp_path: Path) -> None:
    asyncio.run(_writes_during_an_index_build(tmp_path))


async def _writes_during_an_index_build(tmp_path: Path) -> None:
    from aistack.dialects.qdrant import BY_NAME
    from aistack.vectors.embedded import EmbeddedEngine

    engine = EmbeddedEngine(tmp_path, optimize_threshold=0)
    await engine.start()
    try:
        body = {
            "vectors": {"size": 8, "distance": "Dot"},
            "optimizers_config": {"indexing_threshold": 1},
        }
        await engine.call(BY_NAME["create_collection"], "c", "", body, {})
        rng = np.random.default_rng(5)
        pts = [{"id": i, "vector": rng.normal(size=8).tolist()} for i in range(4000)]
        await engine.call(BY_NAME["upsert"], "c", "", {"points": pts}, {})
        task = asyncio.create_task(engine.optimize("c"))
        col = engine.shards.cols["c"]
        while col.replay is None:  # the copy is made; the other process builds its index
            assert not task.done(), "optimize ended before it copied the shard"
            await asyncio.sleep(0.01)
        late = [{"id": 9000 + i, "vector": [1.0] * 8, "payload": {"late": True}} for i in range(3)]
        await engine.call(BY_NAME["upsert"], "c", "", {"points": late}, {})
        await engine.call(BY_NAME["delete_points"], "c", "", {"points": [0, 1]}, {})
        assert await task is True
        count = await engine.call(BY_NAME["count"], "c", "", {}, {})
        assert count == {"count": 4000 + 3 - 2}
        info = await engine.call(BY_NAME["get_collection"], "c", "", {}, {})
        assert info["indexed_vectors_count"] >= 3998
        got = await engine.call(BY_NAME["retrieve"], "c", "", {"ids": [9001, 0]}, {})
        assert [r["id"] for r in got] == [9001] and got[0]["payload"] == {"late": True}
    finally:
        await engine.close()


def test_the_vector_listener_serves_the_api_at_its_root(embedded: Gw) -> None:
    """For apps that take only a URL (vectors.listen): the same API, the same tenancy."""
    own = QdrantClient(
        url=embedded.listen, api_key=embedded.keys["appb"], check_compatibility=False
    )
    if own.collection_exists("direct"):
        own.delete_collection("direct")
    own.create_collection("direct", vectors_config=m.VectorParams(size=2, distance=m.Distance.DOT))
    own.upsert("direct", [m.PointStruct(id=1, vector=[1, 0])])
    assert "direct" in [c.name for c in own.get_collections().collections]
    # The same store and namespace as under /qdrant on the main port.
    assert embedded.client(embedded.keys["appb"]).count("direct").count == 1
    with urllib.request.urlopen(f"{embedded.listen}/") as r:
        assert json.loads(r.read())["title"] == "qdrant - vector search engine"
    # The model APIs are not on it.
    with pytest.raises(urllib.error.HTTPError) as e:
        urllib.request.urlopen(f"{embedded.listen}/api/tags")
    assert e.value.code == 404 and "status" in json.loads(e.value.read())


def test_metrics_show_points_and_disk_per_collection_and_operations(embedded: Gw) -> None:
    b = embedded.client(embedded.keys["appb"])
    if b.collection_exists("metered"):
        b.delete_collection("metered")
    b.create_collection("metered", vectors_config=m.VectorParams(size=2, distance=m.Distance.DOT))
    b.upsert("metered", [m.PointStruct(id=i, vector=[i, 0]) for i in range(3)])
    with pytest.raises(UnexpectedResponse):
        b.count("nothing-here")
    want = 'aistack_vector_points{collection="appb__metered",app="appb"} 3'
    deadline = time.monotonic() + 60
    while True:
        scrape = urllib.request.Request(
            f"{embedded.proc.url}/metrics", headers={"Authorization": f"Bearer {MASTER}"}
        )  # /metrics is for an admin or a key with scope metrics
        with urllib.request.urlopen(scrape) as r:
            text = r.read().decode()
        if want in text:
            break
        assert time.monotonic() < deadline, "the sizes never showed in /metrics"
        time.sleep(0.5)
    assert 'aistack_vector_disk_bytes{collection="appb__metered",app="appb"}' in text
    assert 'aistack_vector_operations_total{operation="upsert",outcome="ok"}' in text
    assert 'aistack_vector_operations_total{operation="count",outcome="404"}' in text


def test_a_store_is_open_in_one_process_at_a_time(tmp_path: Path) -> None:
    """A second gateway (a replica, a worker) on the same path gets a clear 503, never the
    same shards: two processes writing them would corrupt them."""
    asyncio.run(_one_process_at_a_time(tmp_path))


async def _one_process_at_a_time(tmp_path: Path) -> None:
    from aistack.core.errors import GatewayError
    from aistack.dialects.qdrant import BY_NAME
    from aistack.vectors.embedded import EmbeddedEngine

    first, second = EmbeddedEngine(tmp_path), EmbeddedEngine(tmp_path)
    await first.start()
    await second.start()
    try:
        assert (await first.ready())[0]
        ok, why = await second.ready()
        assert not ok and "open in another aistack process" in why
        with pytest.raises(GatewayError) as e:
            await second.call(BY_NAME["list_collections"], "", "", {}, {})
        assert e.value.status == 503 and "engine: qdrant" in e.value.message
    finally:
        await first.close()
        await second.close()
    third = EmbeddedEngine(tmp_path)
    await third.start()
    try:
        assert (await third.ready())[0]
    finally:
        await third.close()
