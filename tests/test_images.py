"""Images end to end: aistack in front of a real ComfyUI (CPU, the tiny random checkpoint).

The official `openai` client's `images.generate` (b64_json and url, n=2, PNGs that
decode at the requested size); a job followed over SSE with its sampler steps, then
fetched; cancels of a job waiting in our queue, of a prompt waiting in ComfyUI's
queue, and of a running one; a gateway killed with jobs queued and restarted, which
finishes them; a ComfyUI killed mid-queue, whose jobs move to a second ComfyUI (a
second process of the same install), none lost, none run twice; GPU sharing against
a stand-in Ollama that records `keep_alive: 0` unloads and holds a chat in flight.
"""

from __future__ import annotations

import base64
import io
import json
import signal
import struct
import threading
import time
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import ollama
import openai
import pytest
from dotenv import dotenv_values

from tests import comfy
from tests.cli import aistack
from tests.fake_ollama import FakeOllama
from tests.procs import VENV_BIN, Proc, free_port, running, start, start_gateway, write_config

pytestmark = pytest.mark.slow
MODEL = comfy.TINY_MODEL
DEADLINE = 240.0  # a busy two-core machine: a few sampler steps can take seconds each


def until(cond: Callable[[], Any], what: str, timeout: float = DEADLINE) -> Any:
    """Wait for `cond()` to be truthy (polling), or fail saying what did not happen."""
    deadline = time.monotonic() + timeout
    while True:
        got = cond()
        if got:
            return got
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(0.1)


def decode_png(data: bytes) -> tuple[int, int]:
    """Decode a PNG fully (chunk CRCs, the zlib stream, every scanline); its size."""
    assert data[:8] == b"\x89PNG\r\n\x1a\n", data[:16]
    pos, idat, w = 8, b"", 0
    h = depth = ctype = 0
    while pos < len(data):
        (n,) = struct.unpack(">I", data[pos : pos + 4])
        kind, body = data[pos + 4 : pos + 8], data[pos + 8 : pos + 8 + n]
        (crc,) = struct.unpack(">I", data[pos + 8 + n : pos + 12 + n])
        assert zlib.crc32(kind + body) == crc, f"bad CRC in {kind!r}"
        if kind == b"IHDR":
            w, h, depth, ctype = struct.unpack(">IIBB", body[:10])
        elif kind == b"IDAT":
            idat += body
        pos += 12 + n
    channels = {0: 1, 2: 3, 4: 2, 6: 4}[ctype]
    raw = zlib.decompress(idat)
    assert len(raw) == h * (1 + w * channels * depth // 8), "scanlines do not match the size"
    return w, h


def sse(resp: httpx.Response) -> Iterator[tuple[str, dict[str, Any]]]:
    event, data = "message", []
    for line in resp.iter_lines():
        if line.startswith(":"):
            continue
        if not line:
            if data:
                yield event, json.loads("\n".join(data))
            event, data = "message", []
        elif line.startswith("event:"):
            event = line[6:].strip()
        elif line.startswith("data:"):
            data.append(line[5:].strip())


@dataclass
class Stack:
    gw: Proc
    comfy: comfy.Comfy

    @property
    def http(self) -> httpx.Client:
        return httpx.Client(base_url=self.gw.url, timeout=DEADLINE)

    def job(self, **body: Any) -> dict[str, Any]:
        with self.http as c:
            r = c.post("/v1/images/jobs", json={"model": MODEL, "size": "64x64", **body})
        assert r.status_code == 202, r.text
        return dict(r.json())

    def get(self, job_id: str) -> dict[str, Any]:
        with self.http as c:
            r = c.get(f"/v1/images/jobs/{job_id}")
        assert r.status_code == 200, r.text
        return dict(r.json())

    def done(self, job_id: str) -> dict[str, Any]:
        return dict(until(lambda: _ended(self.get(job_id)), f"job {job_id} to end"))


def _ended(j: dict[str, Any]) -> dict[str, Any] | None:
    return j if j["status"] in ("succeeded", "failed", "cancelled") else None


def comfy_backend(c: comfy.Comfy, name: str = "comfy", **kw: Any) -> dict[str, Any]:
    return {"name": name, "kind": "comfyui", "url": c.url, **kw}


@pytest.fixture(scope="module")
def comfy_a(tmp_path_factory: pytest.TempPathFactory) -> Iterator[comfy.Comfy]:
    with comfy.running(tmp_path_factory.mktemp("comfy-a")) as c:
        yield c


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory, comfy_a: comfy.Comfy) -> Iterator[Stack]:
    tmp = tmp_path_factory.mktemp("images")
    (tmp / "img2img.json").write_text(json.dumps(comfy.img2img_graph()))
    cfg = {
        "backends": [
            # Two prompts in ComfyUI at once: one running, one waiting in its own queue.
            comfy_backend(comfy_a, max_in_flight=2),
            # The same ComfyUI, serving one workflow of its own (an edit).
            comfy_backend(comfy_a, "comfy-edit",
                          workflows={"img2img": {"file": str(tmp / "img2img.json")}}),
        ]
    }  # fmt: skip
    with running(start_gateway(tmp, cfg)) as gw:
        yield Stack(gw, comfy_a)


def test_the_openai_client_generates_pngs_as_b64_and_as_urls(stack: Stack) -> None:
    client = openai.OpenAI(base_url=f"{stack.gw.url}/v1", api_key="unused", timeout=DEADLINE)
    res = client.images.generate(
        model=MODEL, prompt="a lighthouse at dusk", n=2, size="64x64",  # type: ignore[arg-type]
        response_format="b64_json", extra_body={"steps": 2, "seed": 7},
    )  # fmt: skip
    assert res.data is not None and len(res.data) == 2
    pngs = [base64.b64decode(d.b64_json or "") for d in res.data]
    assert [decode_png(p) for p in pngs] == [(64, 64), (64, 64)]
    assert pngs[0] != pngs[1]  # two images of a batch, not one twice
    res = client.images.generate(
        model=MODEL, prompt="a lighthouse at dawn", size="64x128",  # type: ignore[arg-type]
        response_format="url", extra_body={"steps": 2},
    )  # fmt: skip
    assert res.data is not None and len(res.data) == 1
    url = res.data[0].url or ""
    assert url.startswith(f"{stack.gw.url}/v1/images/files/img_"), url
    got = httpx.get(url, timeout=30)
    assert got.status_code == 200 and got.headers["content-type"] == "image/png"
    assert decode_png(got.content) == (64, 128)


def test_the_openai_client_edits_an_image_with_a_workflow_that_takes_one(stack: Stack) -> None:
    client = openai.OpenAI(base_url=f"{stack.gw.url}/v1", api_key="unused", timeout=DEADLINE)
    res = client.images.edit(
        model="img2img", image=("cat.png", comfy.png(64, 48), "image/png"),
        prompt="a cat in a hat", response_format="b64_json", extra_body={"steps": 2},
    )  # fmt: skip
    assert res.data is not None and len(res.data) == 1
    assert decode_png(base64.b64decode(res.data[0].b64_json or "")) == (64, 48)
    with stack.http as c:
        # A workflow without an input image is not for edits, and the reverse.
        r = c.post("/v1/images/edits", data={"model": MODEL, "prompt": "x"},
                   files={"image": ("a.png", comfy.png(64, 64), "image/png")})  # fmt: skip
        assert r.status_code == 400 and "does not take an input image" in r.text
        r = c.post("/v1/images/generations", json={"model": "img2img", "prompt": "x"})
        assert r.status_code == 400 and "/v1/images/edits" in r.text
        r = c.post("/v1/images/edits", data={"model": "img2img", "prompt": "x"})
        assert r.status_code == 400 and "multipart/form-data" in r.text


def test_image_models_are_listed_for_openai_clients_and_not_for_ollama_ones(stack: Stack) -> None:
    with stack.http as c:
        ids = [m["id"] for m in c.get("/v1/models").json()["data"]]
        tags = [m["name"] for m in c.get("/api/tags").json()["models"]]
        im = c.get("/v1/images/models").json()["data"]
        health = c.get("/health").json()
    assert f"{MODEL}:latest" in ids and f"{MODEL}:latest" not in tags
    models = {m["id"]: m for m in im}
    assert set(models) == {f"{MODEL}:latest", "img2img:latest"}
    tiny, edit = models[f"{MODEL}:latest"], models["img2img:latest"]
    assert tiny["source"] == "built-in" and tiny["defaults"]["steps"] == 20
    assert "prompt" in tiny["inputs"] and "image" not in tiny["inputs"]
    assert edit["source"] == "img2img.json" and "image" in edit["inputs"]
    (b,) = [b for b in health["backends"] if b["name"] == "comfy"]
    assert b["state"] == "up" and b["devices"][0]["vram_total"] > 0


@pytest.mark.parametrize(
    ("path", "body", "status", "words"),
    [
        ("/v1/images/generations", {"model": "nope", "prompt": "x"}, 404, "not found"),
        ("/v1/images/generations", {"model": MODEL, "prompt": "x", "size": "63x64"}, 400,
         "multiple of 8"),
        ("/v1/images/generations", {"model": MODEL}, 400, "prompt is required"),
        ("/v1/images/generations", {"model": MODEL, "prompt": "x", "n": 11}, 400, "from 1 to 10"),
        ("/v1/images/jobs", {"model": MODEL, "prompt": "x", "response_format": "svg"}, 400,
         "b64_json or url"),
        ("/v1/chat/completions", {"model": MODEL, "messages": [{"role": "user",
                                                                "content": "hi"}]}, 400,
         "image model"),
    ],
)  # fmt: skip
def test_bad_image_requests_get_openai_errors(
    stack: Stack, path: str, body: dict[str, Any], status: int, words: str
) -> None:
    with stack.http as c:
        r = c.post(path, json=body)
    assert r.status_code == status, r.text
    err = r.json()["error"]
    assert words in err["message"] and set(err) == {"message", "type", "param", "code"}


def test_the_open_webui_snippet_sets_up_its_image_engine(stack: Stack, tmp_path: Path) -> None:
    """Open WebUI's image engine "openai", as the snippet configures it, makes an image."""
    cfg = write_config(tmp_path / "cli", {"backends": [comfy_backend(stack.comfy)],
                                          "images": {"default_model": MODEL}})  # fmt: skip
    out = aistack("snippet", "open-webui", "--format", "env", "--url", stack.gw.url, config=cfg)
    assert out.returncode == 0, out.stderr
    env = {k: v or "" for k, v in dotenv_values(stream=io.StringIO(out.stdout)).items()}
    assert env["ENABLE_IMAGE_GENERATION"] == "true" and env["IMAGE_GENERATION_ENGINE"] == "openai"
    assert env["IMAGE_GENERATION_MODEL"] == f"{MODEL}:latest"
    client = openai.OpenAI(base_url=env["IMAGES_OPENAI_API_BASE_URL"],
                           api_key=env["IMAGES_OPENAI_API_KEY"], timeout=DEADLINE)  # fmt: skip
    # What Open WebUI sends (backend/open_webui/routers/images.py): model, prompt, n, size,
    # response_format b64_json.
    res = client.images.generate(model=env["IMAGE_GENERATION_MODEL"], prompt="a cat", n=1,
                                 size="64x64", response_format="b64_json",  # type: ignore[arg-type]
                                 extra_body={"steps": 1})  # fmt: skip
    assert res.data is not None and decode_png(base64.b64decode(res.data[0].b64_json or "")) == (
        64, 64,
    )  # fmt: skip


def test_unknown_jobs_and_files_are_404s(stack: Stack) -> None:
    with stack.http as c:
        for path in ("/v1/images/jobs/imgjob_nope", "/v1/images/files/img_nope"):
            r = c.get(path)
            assert r.status_code == 404 and "error" in r.json(), path


def test_a_job_reports_its_sampler_steps_over_sse_then_is_fetched(stack: Stack) -> None:
    job = stack.job(prompt="a fox in snow", steps=4, n=1)
    assert job["status"] == "queued" and job["id"].startswith("imgjob_")
    events: list[tuple[str, dict[str, Any]]] = []
    with stack.http as c, c.stream("GET", f"/v1/images/jobs/{job['id']}/events") as r:
        assert r.headers["content-type"].startswith("text/event-stream")
        events = list(sse(r))
    kinds = [k for k, _ in events]
    assert kinds[-1] == "succeeded" and "running" in kinds, kinds
    steps = [d["progress"]["value"] for k, d in events if k == "progress"]
    assert steps and steps == sorted(steps) and steps[-1] == 4, steps
    assert all(d["progress"]["max"] == 4 for k, d in events if k == "progress")
    final = stack.get(job["id"])
    assert final["status"] == "succeeded" and final["gpu_seconds"] > 0
    assert final["seed"] == job["seed"] and final["backend"] == "comfy"
    (img,) = final["data"]
    got = httpx.get(img["url"], timeout=30)
    assert decode_png(got.content) == (64, 64) == (img["width"], img["height"])


def test_queued_pending_and_running_jobs_are_cancelled(stack: Stack) -> None:
    """With two prompts at once in ComfyUI: the first runs, the second waits in
    ComfyUI's queue, the third in ours. Cancel each, last first."""
    running_job = stack.job(prompt="long", steps=60)
    pending_job = stack.job(prompt="second", steps=2)
    queued_job = stack.job(prompt="third", steps=2)
    until(lambda: stack.get(running_job["id"])["progress"]["value"] >= 1, "the first to run")
    until(lambda: stack.get(pending_job["id"])["backend"], "the second to be given to ComfyUI")
    assert stack.get(queued_job["id"])["backend"] is None
    with stack.http as c:
        for j in (queued_job, pending_job, running_job):
            r = c.delete(f"/v1/images/jobs/{j['id']}")
            assert r.status_code == 200 and r.json()["status"] == "cancelled", r.text
    history = stack.comfy.get("/history")
    prompts = {h["prompt"][1]: h for h in history.values()}
    mine = {p: h for p, h in prompts.items() if p.split("-")[0] in
            {running_job["id"], pending_job["id"], queued_job["id"]}}  # fmt: skip
    # Only the running one ever ran (interrupted); the others never started.
    (ran,) = mine
    assert ran.startswith(running_job["id"])
    assert mine[ran]["status"]["status_str"] == "error"
    queue = stack.comfy.get("/queue")
    assert not queue["queue_running"] and not queue["queue_pending"]
    with stack.http as c:
        gone = c.delete(f"/v1/images/jobs/{queued_job['id']}")  # finished: deleted now
        assert gone.json()["deleted"] is True
        assert c.get(f"/v1/images/jobs/{queued_job['id']}").status_code == 404


def test_a_caller_that_goes_away_cancels_its_generation(stack: Stack) -> None:
    with pytest.raises(httpx.ReadTimeout):
        httpx.post(f"{stack.gw.url}/v1/images/generations",
                   json={"model": MODEL, "prompt": "abandoned", "size": "64x64", "steps": 80},
                   timeout=httpx.Timeout(30, read=3))  # fmt: skip
    with stack.http as c:
        jobs = c.get("/v1/images/jobs", params={"limit": 5}).json()["data"]
    (job,) = [j for j in jobs if j["prompt"] == "abandoned"]
    assert stack.done(job["id"])["status"] == "cancelled"


def serve_on(tmp: Path, cfg: dict[str, Any], port: int, name: str) -> Proc:
    """`aistack serve` on a given port (a restart keeps its name: host and port)."""
    work = tmp / name
    path = write_config(work, cfg)
    cmd = [str(VENV_BIN / "aistack"), "serve", "--host", "127.0.0.1", "--port", str(port),
           "--config", str(path)]  # fmt: skip
    env = {"AISTACK_CONFIG": "", "XDG_DATA_HOME": str(tmp / "data")}
    return start(cmd, f"http://127.0.0.1:{port}", work / "log.txt", env=env, cwd=work)


def test_a_gateway_killed_with_queued_jobs_finishes_them_after_a_restart(
    tmp_path: Path, comfy_a: comfy.Comfy
) -> None:
    cfg = {"backends": [comfy_backend(comfy_a)]}
    port = free_port()
    gw = serve_on(tmp_path, cfg, port, "first")
    s = Stack(gw, comfy_a)
    try:
        first = s.job(prompt="running when killed", steps=12)
        queued = [s.job(prompt=f"queued {i}", steps=2) for i in range(3)]
        until(lambda: s.get(first["id"])["status"] == "running", "the first job to run")
        assert all(s.get(q["id"])["status"] == "queued" for q in queued)
    finally:
        gw.stop(signal.SIGKILL)
    with running(serve_on(tmp_path, cfg, port, "second")) as gw2:
        s2 = Stack(gw2, comfy_a)
        results = [s2.done(j["id"]) for j in (first, *queued)]
        assert [r["status"] for r in results] == ["succeeded"] * 4, results
        assert all(len(r["data"]) == 1 for r in results)
        assert "adopted" in gw2.output()
    # Each ran once: one history entry per job, the first under its first prompt id.
    ids = [h["prompt"][1] for h in comfy_a.get("/history").values()]
    for j in (first, *queued):
        assert [p for p in ids if p.startswith(j["id"])] == [f"{j['id']}-1"]


def test_a_comfyui_killed_mid_queue_hands_its_jobs_to_another(
    tmp_path: Path, comfy_a: comfy.Comfy
) -> None:
    with comfy.running(tmp_path / "comfy-b") as comfy_b:
        cfg = {"backends": [comfy_backend(comfy_a, "a"), comfy_backend(comfy_b, "b")],
               "routing": {"health": {"interval": 2}}}  # fmt: skip
        with running(start_gateway(tmp_path, cfg)) as gw:
            s = Stack(gw, comfy_b)
            jobs = [s.job(prompt=f"failover {i}", steps=8) for i in range(4)]

            def both_running() -> bool:
                now = [s.get(j["id"]) for j in jobs]
                return {j["backend"] for j in now if j["status"] == "running"} == {"a", "b"}

            until(both_running, "a job running on each ComfyUI")
            on_b = {j["id"] for j in jobs if s.get(j["id"])["backend"] == "b"}
            # The doomed one: ComfyUI b dies with its job running.
            comfy_b.stop(signal.SIGKILL)
            results = [s.done(j["id"]) for j in jobs]
            assert [r["status"] for r in results] == ["succeeded"] * 4, [
                r["error"] for r in results
            ]
            assert all(r["backend"] == "a" for r in results if r["id"] in on_b)
            assert all(len(r["data"]) == 1 for r in results)
    # None ran twice where it finished: ComfyUI a has one entry per job it finished.
    ids = [h["prompt"][1] for h in comfy_a.get("/history").values()]
    for j in jobs:
        assert len([p for p in ids if p.split("-")[0] == j["id"]]) == 1, (j["id"], ids)


def test_gpu_sharing_unloads_idle_ollama_models_and_frees_comfyui_when_idle(
    tmp_path: Path, comfy_a: comfy.Comfy
) -> None:
    box = FakeOllama()
    for m in ("llama3.2:1b", "qwen3:4b", "nomic-embed-text"):
        box.add(m)
    box.loaded.update({"llama3.2:1b", "qwen3:4b", "nomic-embed-text:latest"})
    box.hold_answers = True  # a chat stays in flight until released
    box.start()
    try:
        cfg = {
            "backends": [
                {"name": "box", "kind": "ollama", "url": box.url, "gpu": "card0"},
                comfy_backend(comfy_a, gpu="card0", free_after=1),
            ],
        }
        with running(start_gateway(tmp_path, cfg)) as gw:
            s = Stack(gw, comfy_a)
            client = ollama.Client(host=gw.url)
            answer: list[str] = []

            def chat() -> None:
                for c in client.chat(model="qwen3:4b", stream=True,
                                     messages=[{"role": "user", "content": "hi"}]):  # fmt: skip
                    answer.append(c.message.content or "")

            t = threading.Thread(target=chat)
            t.start()
            until(lambda: box.held() == 1, "the chat to be in flight")
            job = s.done(s.job(prompt="gpu turn", steps=2)["id"])
            assert job["status"] == "succeeded"
            # Unloaded with keep_alive: 0 before the job ran; the busy model kept.
            assert sorted(box.unloads) == ["llama3.2:1b", "nomic-embed-text:latest"]
            assert box.loaded == {"qwen3:4b"}
            box.release()
            t.join(DEADLINE)
            assert "".join(answer) == "answer from qwen3:4b"
            until(lambda: "freed comfy's models" in gw.output(), "ComfyUI to be freed when idle")
            # And the next job runs after the free, loading the model again.
            assert s.done(s.job(prompt="again", steps=2)["id"])["status"] == "succeeded"
    finally:
        box.stop()


def test_images_are_keyed_priced_and_counted_in_the_ledger_and_metrics(
    tmp_path: Path, comfy_a: comfy.Comfy
) -> None:
    master = "sk-images-master-0123456789"
    cfg = {
        "backends": [comfy_backend(comfy_a)],
        "auth": {"master_key": master},
        "prices": {f"{MODEL}*": {"image": 0.04, "second": 0.001}},
        "ledger": {"flush_interval": 0.2},
    }
    with running(start_gateway(tmp_path, cfg)) as gw:
        admin = {"authorization": f"Bearer {master}"}
        with httpx.Client(base_url=gw.url, timeout=DEADLINE) as c:
            keys = [c.post("/admin/api/keys", json={"name": n}, headers=admin).json()["key"]
                    for n in ("painter", "other")]  # fmt: skip
            painter, other = ({"authorization": f"Bearer {k}"} for k in keys)
            made = c.post("/admin/api/keys", headers=admin,
                          json={"name": "sketcher", "images_per_minute": 2})  # fmt: skip
            assert made.json()["images_per_minute"] == 2
            sketcher = {"authorization": f"Bearer {made.json()['key']}"}
            one = {"model": MODEL, "prompt": "quick", "size": "64x64", "steps": 1}
            assert (
                c.post("/v1/images/jobs", headers=sketcher, json={**one, "n": 3}).status_code == 400
            )
            assert (
                c.post("/v1/images/jobs", headers=sketcher, json={**one, "n": 2}).status_code == 202
            )
            over = c.post("/v1/images/jobs", headers=sketcher, json=one)
            assert over.status_code == 429 and "2 images per minute" in over.text
            assert int(over.headers["retry-after"]) >= 1
            assert (
                c.post("/v1/images/jobs", json={"model": MODEL, "prompt": "x"}).status_code == 401
            )
            # Waited for: two images in one request.
            r = c.post("/v1/images/generations", headers=painter,
                       json={"model": MODEL, "prompt": "two", "n": 2, "size": "64x64",
                             "steps": 2})  # fmt: skip
            assert r.status_code == 200 and len(r.json()["data"]) == 2, r.text
            # A job: its row is written when it ends, not when it is accepted.
            job = c.post(
                "/v1/images/jobs",
                headers=painter,
                json={"model": MODEL, "prompt": "one", "size": "64x64", "steps": 2},
            )
            assert job.status_code == 202
            jid = job.json()["id"]
            until(lambda: c.get(f"/v1/images/jobs/{jid}", headers=painter).json()["status"]
                  == "succeeded", "the job to succeed")  # fmt: skip
            # Each key sees its own jobs; the master key sees everyone's.
            assert c.get(f"/v1/images/jobs/{jid}", headers=other).status_code == 404
            assert c.get("/v1/images/jobs", headers=other).json()["data"] == []
            mine = c.get("/v1/images/jobs", headers=painter).json()["data"]
            assert {j["prompt"] for j in mine} == {"two", "one"}
            assert len(c.get("/v1/images/jobs", headers=admin).json()["data"]) == 3

            def usage() -> dict[str, Any] | None:
                u = c.get("/admin/api/usage", params={"by": "model"}, headers=admin).json()
                return u if u["total"]["images"] == 5 else None

            u = until(usage, "five images in the ledger")
            (row,) = [r for r in u["rows"] if r["model"] == f"{MODEL}:latest"]
            # Two refused (over the limit): in the ledger as errors, with no images.
            assert row["requests"] == 5 and row["errors"] == 2 and row["gpu_seconds"] > 0
            assert row["cost"] >= 5 * 0.04 and row["cost_unknown"] == 0
            rows = c.get("/admin/api/requests", headers=admin).json()["requests"]
            mine = [r for r in rows if r.get("model", "").startswith(MODEL)]
            routes = sorted(r["route"] for r in mine if r["status"] == 200)
            assert routes == ["images_generations", "images_jobs_create", "images_jobs_create"]
            metrics = c.get("/metrics", headers=admin).text
        m = f'model="{MODEL}:latest",backend="comfy"'
        assert f'aistack_image_jobs_total{{{m},status="succeeded"}} 3' in metrics
        assert f'aistack_images_total{{{m},app="painter"}} 3' in metrics
        assert "aistack_image_queue_depth 0" in metrics


def test_replicas_on_postgresql_share_one_queue(
    tmp_path: Path, comfy_a: comfy.Comfy, pg_url: str
) -> None:
    """Two gateways on one database and one image folder: jobs posted to either run once,
    on one of them, and either can show a job and follow its progress."""
    import psycopg

    with psycopg.connect(pg_url, autocommit=True) as c:
        c.execute("DROP SCHEMA public CASCADE")
        c.execute("CREATE SCHEMA public")
    cfg = {"backends": [comfy_backend(comfy_a, max_in_flight=2)], "database_url": pg_url,
           "images": {"storage": str(tmp_path / "shared-images")}}  # fmt: skip
    with (
        running(start_gateway(tmp_path, cfg, name="a", args=["--migrate"])) as a,
        running(start_gateway(tmp_path, cfg, name="b")) as b,
    ):
        sa, sb = Stack(a, comfy_a), Stack(b, comfy_a)
        # The followed one runs long enough to be seen running by a replica that polls.
        jobs = [(sa if i % 2 else sb).job(prompt=f"replica {i}", steps=20 if i == 1 else 3)
                for i in range(4)]  # fmt: skip
        # Followed on the replica that did not take the request (jobs[1] went to a).
        with sb.http as c, c.stream("GET", f"/v1/images/jobs/{jobs[1]['id']}/events") as r:
            kinds = [k for k, _ in sse(r)]
        assert kinds[-1] == "succeeded" and ("progress" in kinds or "running" in kinds), kinds
        done = [(sb if i % 2 else sa).done(j["id"]) for i, j in enumerate(jobs)]
        assert [d["status"] for d in done] == ["succeeded"] * 4
        for d in done:  # the image is there whichever replica answers
            assert httpx.get(d["data"][0]["url"], timeout=30).status_code == 200
    ids = [h["prompt"][1] for h in comfy_a.get("/history").values()]
    for j in jobs:
        assert len([p for p in ids if p.split("-")[0] == j["id"]]) == 1, j["id"]
