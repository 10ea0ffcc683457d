"""ComfyUI: image models behind its graph API (POST /prompt, the WebSocket, /history, /view).

The backend knows the wire; what to run (workflows, bindings) and when (the job queue)
live in `aistack.images`. Its models are image models: the workflows the config names,
or with none, every checkpoint ComfyUI reports (`/object_info/CheckpointLoaderSimple`,
then `/models/checkpoints`), named after the file without its extension. Chat and
embeddings on them are a clear 400.

Progress comes from ComfyUI's WebSocket, which sends a prompt's events only to the
socket whose `clientId` submitted it: each backend keeps one socket open under a client
id that stays the same across restarts of this gateway (`client_id`), so a restarted
gateway hears about the prompts it submitted before. When the socket is down, the job
runner falls back to reading `/history`. ComfyUI has no auth of its own; `api_key` and
`headers` are sent for a proxy in front of it.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import urllib.parse
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import msgspec
import orjson

from aistack.backends.base import ChunkStream, Kind
from aistack.backends.http import HttpBackend, HttpConfig, HttpSettings, http_settings
from aistack.backends.transport import Endpoint, HttpClient, TransportError, parse_url
from aistack.backends.websocket import WebSocket
from aistack.core.chat import ChatRequest, EmbedRequest, EmbedResult, GenerateRequest
from aistack.core.errors import ConfigError, ErrorKind, GatewayError, invalid
from aistack.core.images import ImageEvent, ImageRequest, OutputRef
from aistack.core.models import ModelCard, ModelShow, canonical
from aistack.dialects import comfyui as wire

log = logging.getLogger("aistack.comfyui")

Listener = Callable[[ImageEvent], None]

# Seconds between attempts to reopen the progress socket (doubling up to the cap).
FEED_RETRY = 0.5
FEED_RETRY_MAX = 5.0


@dataclass(frozen=True, slots=True)
class Workflow:
    """An API-format graph and where each knob of a request goes in it."""

    name: str  # the public model name it serves ("" for the built-in one)
    graph: wire.Graph
    bindings: dict[str, tuple[wire.Target, ...]]
    source: str = "built-in"

    def check(self, req: ImageRequest) -> None:
        """A 400 for what the request asks that this workflow cannot do."""
        wire.check_request(self.bindings, req, req.image is not None)

    def describe(self) -> dict[str, Any]:
        """What the console shows: the knobs it takes and the workflow's own values."""
        return {
            "source": Path(self.source).name,  # the file's name, not where it is
            "inputs": sorted(self.bindings),
            "defaults": wire.defaults(self.graph, self.bindings),
        }


# The built-in text-to-image workflow: every checkpoint, with no workflow file.
BUILTIN = Workflow("", wire.BUILTIN_TXT2IMG, wire.merge_bindings(wire.BUILTIN_TXT2IMG, {}))


def load_workflow(name: str, path: Path, bindings: Mapping[str, object] | None) -> Workflow:
    """A workflow file, checked once at startup: raises ValueError naming the file."""
    where = str(path)
    try:
        graph = json.loads(path.read_text())
    except OSError as e:
        raise ValueError(f"{where}: cannot read the workflow: {e.strerror or e}") from None
    except json.JSONDecodeError as e:
        raise ValueError(f"{where}: not JSON: {e}") from None
    g = wire.check_graph(graph, where)
    merged = wire.merge_bindings(g, wire.parse_bindings(bindings or {}, g, where))
    if "prompt" not in merged:
        raise ValueError(
            f"{where}: no prompt input found; add bindings.prompt: 'node_id.input' for the "
            "text the prompt goes into"
        )
    if not wire.output_nodes(g):
        raise ValueError(f"{where}: the workflow has no SaveImage (or PreviewImage) node")
    return Workflow(name, g, merged, where)


class ComfyUIBackend(HttpBackend):
    kind = "comfyui"
    unmanaged_reason = "ComfyUI's models are files in its models/ folders"

    def __init__(
        self,
        name: str,
        endpoint: Endpoint,
        client: HttpClient,
        s: HttpSettings,
        *,
        workflows: Mapping[str, Workflow] | None = None,
        gpu: str = "",
    ) -> None:
        super().__init__(name, endpoint, client, s)
        # Public model name -> its workflow; none: every checkpoint, through BUILTIN.
        self.workflows = {canonical(k): w for k, w in (workflows or {}).items()}
        self._names = [w.name or k for k, w in (workflows or {}).items()]
        self.gpu = gpu
        # Where ComfyUI sends our prompts' events; the images runtime sets a stable one.
        self.client_id = f"aistack-{os.urandom(8).hex()}"
        self.checkpoints: dict[str, str] = {}  # public name -> checkpoint file
        self.devices: list[dict[str, Any]] = []
        self.version = ""
        self._listeners: dict[str, Listener] = {}
        self._feed: asyncio.Task[None] | None = None
        self._socket: WebSocket | None = None
        self.feed_up = asyncio.Event()
        self._ws_headers = [(k, v) for k, v in self._headers if k not in (b"content-type",
                                                                         b"accept")]  # fmt: skip

    def status_error(
        self, status: int, body: object, retry_after: float | None = None
    ) -> GatewayError:
        # A refused graph is the workflow's fault (the operator's), not the caller's.
        if status == 400 and isinstance(body, dict) and ("error" in body or "node_errors" in body):
            return GatewayError(
                ErrorKind.UPSTREAM_FAILED,
                f"backend '{self.name}' refused the workflow: {wire.prompt_error(body)}",
                backend=self.name,
                upstream_status=status,
            )
        detail = body if isinstance(body, str) and body else f"status {status}"
        kind = ErrorKind.UPSTREAM_ERROR if status == 503 else ErrorKind.UPSTREAM_FAILED
        return GatewayError(
            kind,
            f"backend '{self.name}' answered {status}: {str(detail)[:300]}",
            backend=self.name,
            upstream_status=status,
            retry_after=retry_after,
        )

    # -- lifecycle

    async def start(self) -> None:
        if self._feed is None:
            self._feed = asyncio.create_task(self._run_feed(), name=f"comfyui-feed-{self.name}")

    async def close(self) -> None:
        task, self._feed = self._feed, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        sock, self._socket = self._socket, None
        if sock is not None:
            await sock.close()

    # -- models and health

    async def list_models(self) -> list[ModelCard]:
        if self.workflows:
            return [wire.image_card(n, self.name, "workflow") for n in self._names]
        files = await self.checkpoint_files()
        found = {wire.model_name(f): f for f in files}
        self.checkpoints = found
        return [wire.image_card(n, self.name, "checkpoint") for n in sorted(found)]

    async def checkpoint_files(self) -> list[str]:
        obj = await self.get_json("/object_info/CheckpointLoaderSimple")
        files = wire.checkpoints_from_object_info(obj)
        if files:
            return files
        resp = await self.send("GET", "/models/checkpoints", probe=True)
        got = await self.read_json(resp)
        if resp.status == 200 and isinstance(got, list):
            return [f for f in got if isinstance(f, str)]
        return []

    async def show(self, card: ModelCard) -> ModelShow:
        return ModelShow(card=card, capabilities=("image",))

    async def probe(self) -> None:
        stats = await self.get_json("/system_stats")
        self.devices = wire.devices_from_stats(stats)
        system = stats.get("system")
        if isinstance(system, dict):
            self.version = str(system.get("comfyui_version") or "")

    def describe(self) -> dict[str, object]:
        out = super().describe()
        if self.gpu:
            out["gpu"] = self.gpu
        return out

    # -- not text models

    def _not_text(self, model: str) -> GatewayError:
        return invalid(
            f"'{model}' is an image model (backend '{self.name}', ComfyUI): "
            "use POST /v1/images/generations",
            "model",
        )

    async def chat(self, req: ChatRequest, model: str) -> ChunkStream:
        raise self._not_text(model)

    async def generate(self, req: GenerateRequest, model: str) -> ChunkStream:
        raise self._not_text(model)

    async def embed(self, req: EmbedRequest, model: str) -> EmbedResult:
        raise self._not_text(model)

    # -- what runs

    def workflow_for(self, model: str) -> Workflow:
        """The model's workflow here: its own, or the built-in one (checkpoints)."""
        return self.workflows.get(canonical(model), BUILTIN)

    def graph(
        self, model: str, req: ImageRequest, *, seed: int, image_name: str | None, prefix: str
    ) -> wire.Graph:
        """The graph to queue for this request, the request's values bound in."""
        wf = self.workflow_for(model)
        checkpoint = None
        if wf is BUILTIN:
            checkpoint = self.checkpoints.get(model)
            if checkpoint is None:
                raise GatewayError(
                    ErrorKind.NOT_FOUND,
                    f"backend '{self.name}' has no checkpoint for '{model}' any more",
                    param="model",
                    code="model_not_found",
                )
        return wire.bind(wf.graph, wf.bindings, req, seed=seed, checkpoint=checkpoint,
                         image_name=image_name, prefix=prefix)  # fmt: skip

    # -- the graph API

    async def submit(self, graph: dict[str, Any], prompt_id: str) -> str:
        """Queue a graph under our prompt id (so a retry can ask whether it already ran)."""
        body = {"prompt": graph, "client_id": self.client_id, "prompt_id": prompt_id}
        obj = await self.get_json("/prompt", body, probe=False)
        return str(obj.get("prompt_id") or prompt_id)

    async def history(self, prompt_id: str) -> dict[str, Any] | None:
        """The prompt's history entry once it has finished; None before (or if unknown)."""
        obj = await self.get_json(f"/history/{urllib.parse.quote(prompt_id, safe='')}")
        entry = obj.get(prompt_id)
        return entry if isinstance(entry, dict) else None

    async def queue(self) -> tuple[list[str], list[str]]:
        """(running, pending) prompt ids."""
        return wire.queue_ids(await self.get_json("/queue"))

    async def _post(self, path: str, body: object) -> None:
        resp = await self.send("POST", path, body, probe=True)
        try:
            raw = await resp.read()
        except TransportError as e:
            raise self.unreachable(e) from None
        if resp.status != 200:
            raise self.error_for(resp, raw.decode("utf-8", "replace"))

    async def delete_pending(self, prompt_ids: list[str]) -> None:
        await self._post("/queue", {"delete": prompt_ids})

    async def interrupt(self, prompt_id: str) -> None:
        """Stop this prompt if it is the one running (ComfyUI checks, atomically)."""
        await self._post("/interrupt", {"prompt_id": prompt_id})

    async def free(self) -> None:
        """Unload its models and free their memory (the GPU is someone else's turn)."""
        await self._post("/free", {"unload_models": True, "free_memory": True})

    async def object_info(self, node_class: str) -> dict[str, Any]:
        return await self.get_json(f"/object_info/{urllib.parse.quote(node_class, safe='')}")

    async def view(self, ref: OutputRef) -> bytes:
        q = urllib.parse.urlencode(
            {"filename": ref.filename, "subfolder": ref.subfolder, "type": ref.type}
        )
        resp = await self.send("GET", f"/view?{q}")
        try:
            data = await resp.read()
        except TransportError as e:
            raise self.unreachable(e) from None
        if resp.status != 200:
            raise self.error_for(resp, data.decode("utf-8", "replace")[:300])
        return data

    async def upload_image(self, data: bytes, filename: str, mime: str = "image/png") -> str:
        """Put an input image in ComfyUI's input folder; the name to give LoadImage."""
        boundary = os.urandom(12).hex()
        safe = os.path.basename(filename.replace("\\", "/")) or "input.png"
        parts = [
            f'--{boundary}\r\ncontent-disposition: form-data; name="image"; '
            f'filename="{safe}"\r\ncontent-type: {mime}\r\n\r\n'.encode(),
            data,
            f'\r\n--{boundary}\r\ncontent-disposition: form-data; name="type"\r\n\r\n'
            f"input\r\n--{boundary}\r\ncontent-disposition: form-data; "
            f'name="overwrite"\r\n\r\ntrue\r\n--{boundary}--\r\n'.encode(),
        ]
        headers = [(k, v) for k, v in self._headers if k not in (b"content-type",)] + [
            (b"content-type", f"multipart/form-data; boundary={boundary}".encode())
        ]
        try:
            resp = await self.client.request(
                "POST",
                self.endpoint,
                "/upload/image",
                body=b"".join(parts),
                headers=headers,
                timeouts=self.settings.timeouts,
            )
            raw = await resp.read()
        except TransportError as e:
            raise self.unreachable(e) from None
        obj = orjson.loads(raw) if raw[:1] == b"{" else None
        if resp.status != 200 or not isinstance(obj, dict) or not obj.get("name"):
            raise self.error_for(resp, raw.decode("utf-8", "replace")[:300])
        sub = str(obj.get("subfolder") or "")
        return f"{sub}/{obj['name']}" if sub else str(obj["name"])

    # -- the progress feed

    def set_client_id(self, client_id: str) -> None:
        """Listen under this client id from now on (reopening the socket if it is open)."""
        if client_id == self.client_id:
            return
        self.client_id = client_id
        sock = self._socket
        if sock is not None:
            sock.abort()

    def listen(self, prompt_id: str, listener: Listener) -> None:
        self._listeners[prompt_id] = listener

    def unlisten(self, prompt_id: str) -> None:
        self._listeners.pop(prompt_id, None)

    async def _run_feed(self) -> None:
        wait = FEED_RETRY
        while True:
            try:
                sock = await WebSocket.connect(
                    self.endpoint,
                    f"/ws?clientId={urllib.parse.quote(self.client_id)}",
                    self._ws_headers,
                    within=self._probe.connect or 5.0,
                )
            except TransportError as e:
                log.debug("backend %s: progress feed unavailable: %s", self.name, e)
                await asyncio.sleep(wait)
                wait = min(FEED_RETRY_MAX, wait * 2)
                continue
            self._socket = sock
            self.feed_up.set()
            wait = FEED_RETRY
            try:
                while True:
                    text, data = await sock.recv()
                    if text:
                        self._dispatch(data)
            except TransportError:
                log.info("backend %s: the progress feed closed; reopening", self.name)
            finally:
                self.feed_up.clear()
                self._socket = None
                await sock.close()
            await asyncio.sleep(wait)

    def _dispatch(self, data: bytes) -> None:
        try:
            msg = orjson.loads(data)
        except orjson.JSONDecodeError:
            return
        if not isinstance(msg, dict):
            return
        ev = wire.event_from_wire(msg)
        if ev is None:
            return
        listener = self._listeners.get(ev.prompt_id)
        if listener is not None:
            try:
                listener(ev)
            except Exception:
                log.exception("backend %s: a progress listener failed", self.name)


class ComfyConfig(HttpConfig):
    """A `comfyui` entry's own keys (docs/images.md)."""

    # Public model name -> its workflow file (API format) and bindings; none: every
    # checkpoint ComfyUI has, through the built-in text-to-image workflow.
    workflows: dict[str, WorkflowConfig] = msgspec.field(default_factory=dict)
    # Seconds without a job before its models are freed (/free); default
    # images.free_after when it is in a gpu group, else never; 0: never.
    free_after: float | None = None

    def problems(self) -> Iterator[tuple[str, str]]:
        yield from super().problems()
        for name in self.workflows:
            if not name or not name[0].isalnum() or any(c.isspace() for c in name):
                yield "workflows", f"{name!r} is not a model name"
        if self.free_after is not None and self.free_after < 0:
            yield "free_after", "must be 0 (never) or more seconds"


class WorkflowConfig(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    # An API-format workflow (ComfyUI's "Save (API Format)"); relative to the config file.
    file: str
    # Knob -> "node_id.input" (or a list of them): prompt, negative_prompt, width,
    # height, n, seed, steps, cfg, checkpoint, image. Unset knobs are found in the graph.
    bindings: dict[str, str | list[str]] = msgspec.field(default_factory=dict)


def _build(c: ComfyConfig, client: HttpClient) -> ComfyUIBackend:
    s = http_settings(c)
    try:
        workflows = {n: load_workflow(n, Path(w.file), w.bindings) for n, w in c.workflows.items()}
    except ValueError as e:
        raise ConfigError(f"backend '{c.name}': workflows: {e}") from None
    return ComfyUIBackend(c.name, parse_url(s.url), client, s, workflows=workflows,
                          gpu=c.gpu or "")  # fmt: skip


KIND = Kind("comfyui", ComfyConfig, _build)
