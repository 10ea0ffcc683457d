"""The `comfyui` backend against a real ComfyUI (CPU, the tiny random-weight checkpoint).

What the wire does: the checkpoint listed as an image model, health from
/system_stats, a graph queued under our own prompt id with its progress heard on the
WebSocket (KSampler steps), the history and the PNG through /view; a refused graph,
a pending prompt deleted, a running one interrupted, an input image uploaded.
"""

from __future__ import annotations

import asyncio
import random
import struct
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from aistack.backends.comfyui import ComfyUIBackend
from aistack.backends.http import HttpSettings
from aistack.backends.transport import HttpClient, parse_url
from aistack.core.chat import ChatRequest, Message
from aistack.core.errors import GatewayError
from aistack.core.images import ImageEvent, OutputRef
from aistack.dialects import comfyui as wire
from tests import comfy

pytestmark = pytest.mark.slow
DEADLINE = 180.0


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[comfy.Comfy]:
    with comfy.running(tmp_path_factory.mktemp("comfy-backend")) as c:
        yield c


def run(url: str, fn: Callable[[ComfyUIBackend], Awaitable[Any]]) -> Any:
    async def main() -> Any:
        client = HttpClient()
        b = ComfyUIBackend("comfy", parse_url(url), client, HttpSettings(url=url))
        await b.start()
        try:
            return await fn(b)
        finally:
            await b.close()
            await client.aclose()

    return asyncio.run(main())


def png_size(data: bytes) -> tuple[int, int]:
    assert data[:8] == b"\x89PNG\r\n\x1a\n", data[:16]
    w, h = struct.unpack(">II", data[16:24])
    return w, h


async def until_done(events: list[ImageEvent], done: asyncio.Event) -> None:
    async with asyncio.timeout(DEADLINE):
        await done.wait()


def recorder() -> tuple[list[ImageEvent], asyncio.Event, Callable[[ImageEvent], None]]:
    events: list[ImageEvent] = []
    done = asyncio.Event()

    def on(ev: ImageEvent) -> None:
        events.append(ev)
        if ev.kind in ("done", "error", "interrupted"):
            done.set()

    return events, done, on


def test_checkpoints_are_listed_as_image_models_and_health_shows_the_device(
    server: comfy.Comfy,
) -> None:
    async def go(b: ComfyUIBackend) -> Any:
        await b.probe()
        return await b.list_models(), b.devices, b.checkpoints

    cards, devices, ckpts = run(server.url, go)
    assert [c.name for c in cards] == [comfy.TINY_MODEL]
    assert cards[0].capabilities == ("image",)
    assert ckpts == {comfy.TINY_MODEL: comfy.TINY_CKPT}
    assert devices and devices[0]["type"] == "cpu" and devices[0]["vram_total"] > 0


def test_a_graph_runs_with_progress_on_the_socket_then_history_and_view(
    server: comfy.Comfy,
) -> None:
    async def go(b: ComfyUIBackend) -> Any:
        async with asyncio.timeout(DEADLINE):
            await b.feed_up.wait()
        events, done, on = recorder()
        pid = f"test-{random.getrandbits(48):x}"
        b.listen(pid, on)
        graph = comfy.txt2img_graph(random.getrandbits(31), steps=3, size=64)
        assert await b.submit(graph, pid) == pid
        await until_done(events, done)
        entry = await b.history(pid)
        assert entry is not None
        state, _msg, refs = wire.history_result(entry)
        return events, state, [await b.view(r) for r in refs]

    events, state, images = run(server.url, go)
    kinds = [e.kind for e in events]
    assert kinds[0] == "started" and kinds[-1] == "done", kinds
    steps = [(e.value, e.max) for e in events if e.kind == "progress"]
    assert steps[-1] == (3, 3) and len(steps) >= 3, steps
    assert state == "succeeded"
    assert [png_size(i) for i in images] == [(64, 64)]


def test_a_refused_graph_says_which_node_and_why(server: comfy.Comfy) -> None:
    graph = comfy.txt2img_graph(1)
    graph["4"]["inputs"]["ckpt_name"] = "missing.safetensors"

    async def go(b: ComfyUIBackend) -> GatewayError:
        with pytest.raises(GatewayError) as e:
            await b.submit(graph, "refused-1")
        return e.value

    err = run(server.url, go)
    assert err.status == 502 and "refused the workflow" in err.message
    assert "CheckpointLoaderSimple" in err.message and "missing.safetensors" in err.message


def test_a_pending_prompt_is_deleted_and_a_running_one_interrupted(server: comfy.Comfy) -> None:
    async def go(b: ComfyUIBackend) -> Any:
        async with asyncio.timeout(DEADLINE):
            await b.feed_up.wait()
        first, first_done, on_first = recorder()
        started = asyncio.Event()

        def on(ev: ImageEvent) -> None:
            on_first(ev)
            if ev.kind == "progress":
                started.set()

        p1, p2 = (f"cancel-{random.getrandbits(40):x}-{i}" for i in (1, 2))
        b.listen(p1, on)
        second, _, on_second = recorder()
        b.listen(p2, on_second)
        await b.submit(comfy.txt2img_graph(random.getrandbits(31), steps=50), p1)
        await b.submit(comfy.txt2img_graph(random.getrandbits(31), steps=2), p2)
        async with asyncio.timeout(DEADLINE):
            await started.wait()
        running, pending = await b.queue()
        assert running == [p1] and p2 in pending
        await b.delete_pending([p2])
        await b.interrupt(p2)  # not the running one: nothing happens
        await b.interrupt(p1)
        await until_done(first, first_done)
        async with asyncio.timeout(DEADLINE):
            while await b.history(p1) is None:
                await asyncio.sleep(0.1)
        entry = await b.history(p1)
        assert entry is not None
        return first, second, wire.history_result(entry)[0], await b.queue(), await b.history(p2)

    first, second, state, queue, gone = run(server.url, go)
    assert "interrupted" in [e.kind for e in first]
    assert state == "cancelled"
    assert second == [] and gone is None and p2_absent(queue)


def p2_absent(queue: tuple[list[str], list[str]]) -> bool:
    return not any(p.startswith("cancel-") for p in queue[0] + queue[1])


def test_an_uploaded_image_is_an_input_for_load_image(server: comfy.Comfy, tmp_path: Path) -> None:
    async def go(b: ComfyUIBackend) -> Any:
        # The model-free graph makes a PNG; upload it back and load it.
        pid = f"make-{random.getrandbits(40):x}"
        events, done, on = recorder()
        b.listen(pid, on)
        await b.submit(comfy.empty_image_graph(48, 32, random.getrandbits(24)), pid)
        await until_done(events, done)
        entry = await b.history(pid)
        assert entry is not None
        png = await b.view(wire.history_result(entry)[2][0])
        name = await b.upload_image(png, "../../evil name.png")
        pid2 = f"load-{random.getrandbits(40):x}"
        events2, done2, on2 = recorder()
        b.listen(pid2, on2)
        graph = {
            "1": {"class_type": "LoadImage", "inputs": {"image": name}},
            "2": {"class_type": "SaveImage", "inputs": {"filename_prefix": "up",
                                                        "images": ["1", 0]}},
        }  # fmt: skip
        await b.submit(graph, pid2)
        await until_done(events2, done2)
        entry2 = await b.history(pid2)
        assert entry2 is not None
        refs = wire.history_result(entry2)[2]
        return name, await b.view(refs[0]), refs[0]

    name, png, ref = run(server.url, go)
    assert name == "evil name.png"
    assert png_size(png) == (48, 32)
    assert isinstance(ref, OutputRef) and ref.filename.startswith("up")


def test_text_requests_to_an_image_model_are_a_clear_400(server: comfy.Comfy) -> None:
    async def go(b: ComfyUIBackend) -> GatewayError:
        with pytest.raises(GatewayError) as e:
            await b.chat(
                ChatRequest(model="x", messages=(Message(role="user", content="hi"),)), "x"
            )
        return e.value

    err = run(server.url, go)
    assert err.status == 400 and "/v1/images/generations" in err.message
