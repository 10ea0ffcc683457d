"""A stand-in for an Ollama server: its model store and its memory.

Ollama's store (a registry to pull from, blobs on disk) and a GPU are parts this
machine does not have, so this small server plays Ollama's documented answers
(shared/reference/ollama-api.md 2.10-2.17): `/api/pull` streams `pulling manifest`,
then per layer `pulling <digest12>` with `total`/`completed`, then `verifying sha256
digest`, `writing manifest`, `success`; an error mid-pull is an `{"error": ...}` line;
a pull that stops keeps its bytes, so the next pull of the same model resumes there
(as Ollama's partial blobs do); `hold_pull_at` holds a pull at that many bytes until
`release_pulls()`, so a test can interrupt it there whatever the machine's speed.
Delete and copy answer 200 with an empty body, or 404.

Memory (section 2.4-2.6, 2.12): `/api/chat` and `/api/generate` load a cold model
first (counted in `loads`; it takes `load_time`, or until `open_loads()` while
`hold_loads` is set), evicting the least recently used models when it does not fit in
`vram`; `/api/ps` lists what is loaded with its size and keep-alive. An empty request
loads (`done_reason: load`), with `keep_alive: 0` unloads (`unload`, recorded in
`unloads`: what GPU sharing asks for). Unlike Ollama,
which waits for a model's requests to end before evicting it, this one swaps at once
(as llama-swap does) and records each eviction under a running request in
`evicted_running`, so a scheduler that lets that happen is caught. Answers take
`answer_time`, or wait for `release()` while `hold_answers` is set; `busy` answers the
next requests with 503 (or `busy_status`) and `Retry-After: busy_retry_after`.
Streams can be made long (`stream_chunks`) and made to stall mid-way (`stall_after`):
what a stream that ends early, cut by its client or by the gateway, needs.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import time
from dataclasses import dataclass, field

from tests.faults import FaultServer, chunk, response_head


def _digest(s: str) -> str:
    return hashlib.sha256(s.encode()).hexdigest()


def canonical(name: str) -> str:
    n = name.lower()
    slash, colon = n.rfind("/"), n.rfind(":")
    return n if colon > slash else n + ":latest"


@dataclass
class Stored:
    name: str
    size: int
    digest: str
    family: str = "llama"
    parameter_size: str = "1B"
    quantization: str = "Q4_K_M"
    modified_at: str = "2025-05-10T08:06:48.639712648-07:00"


@dataclass
class FakeOllama:
    """Models on this 'instance', the registry it can pull from, and the faults to play."""

    models: dict[str, Stored] = field(default_factory=dict)
    # name -> bytes of its weights layer, pullable from the "registry"
    registry: dict[str, int] = field(default_factory=dict)
    # name -> byte offset at which the next pull fails once (a dropped connection)
    fail_once_at: dict[str, int] = field(default_factory=dict)
    # names whose pull always fails mid-way
    fail_always: set[str] = field(default_factory=set)
    # bytes already downloaded per model (a pull that stopped keeps them)
    partial: dict[str, int] = field(default_factory=dict)
    # (model, offset the pull started from) for every pull
    pulls: list[tuple[str, int]] = field(default_factory=list)
    loaded: set[str] = field(default_factory=set)
    # Memory: bytes of VRAM (0: everything fits), load/answer times, what happened.
    vram: int = 0
    load_time: float = 0.0
    answer_time: float = 0.0
    hold_loads: bool = False
    hold_answers: bool = False
    loads: list[str] = field(default_factory=list)  # every model load, in order
    unloads: list[str] = field(default_factory=list)  # every keep_alive: 0 unload, in order
    evicted: list[str] = field(default_factory=list)
    evicted_running: list[tuple[str, str]] = field(default_factory=list)  # (evicted, for)
    running: dict[str, int] = field(default_factory=dict)
    served: list[tuple[str, str]] = field(default_factory=list)  # (model, last user message)
    busy: int = 0  # answer the next this many chat/generate requests as busy
    busy_status: int = 503
    busy_retry_after: str | None = "1"
    busy_answered: int = 0
    # Streamed answers: this many content chunks ("tok ", about a token each) before
    # the final line; with `stall_after`, the stream stops after that many and sends
    # nothing more until its caller goes away (`stalled`: streams stalled now;
    # `abandoned`: stalled streams whose caller then closed the connection).
    stream_chunks: int = 0
    stall_after: int | None = None
    stalled: int = 0
    abandoned: int = 0
    steps: int = 20  # progress lines per layer
    delay: float = 0.0  # seconds between progress lines
    # A pull stops once it has this many bytes, until `release_pulls()` (once; 0: never).
    hold_pull_at: int = 0
    requests: list[tuple[str, str, dict[str, object]]] = field(default_factory=list)
    server: FaultServer | None = None

    _used: dict[str, float] = field(default_factory=dict)  # model -> last use (monotonic)
    _gates: list[asyncio.Future[None]] = field(default_factory=list)
    _answer_gates: list[asyncio.Future[None]] = field(default_factory=list)
    _pull_gates: list[asyncio.Future[None]] = field(default_factory=list)

    def add(self, name: str, size: int = 1_000_000, **kw: str) -> None:
        self.models[canonical(name)] = Stored(canonical(name), size, _digest(name), **kw)

    # -- controls, from the test's thread

    def _soon(self, fn: object) -> None:
        assert self.server is not None and self.server._loop is not None
        self.server._loop.call_soon_threadsafe(fn)  # type: ignore[arg-type]

    def release_pulls(self) -> None:
        """Let a pull held at `hold_pull_at` go on."""

        def go() -> None:
            for f in self._pull_gates:
                if not f.done():
                    f.set_result(None)
            self._pull_gates.clear()

        self._soon(go)

    def open_loads(self) -> None:
        """Let every load waiting on `hold_loads` finish (and later ones not wait)."""
        self.hold_loads = False

        def go() -> None:
            for f in self._gates:
                if not f.done():
                    f.set_result(None)
            self._gates.clear()

        self._soon(go)

    def release(self, n: int = 1) -> None:
        """Let the `n` oldest answers waiting on `hold_answers` finish."""

        def go() -> None:
            for _ in range(n):
                while self._answer_gates:
                    f = self._answer_gates.pop(0)
                    if not f.done():
                        f.set_result(None)
                        break

        self._soon(go)

    def held(self) -> int:
        """Answers waiting on `hold_answers` now."""
        return sum(1 for f in list(self._answer_gates) if not f.done())

    # -- server

    def start(self, port: int = 0) -> FakeOllama:
        """Serve (again, after `stop`: on `port`, as a restarted instance would)."""
        self.server = FaultServer(self._handle, port=port).start()
        return self

    def stop(self) -> None:
        if self.server is not None:
            self.server.stop()

    @property
    def url(self) -> str:
        assert self.server is not None
        return self.server.url

    async def _handle(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, req: bytes
    ) -> None:
        head, _, raw = req.partition(b"\r\n\r\n")
        method, path, _ = head.split(b"\r\n", 1)[0].decode().split(" ", 2)
        body = json.loads(raw) if raw.strip() else {}
        self.requests.append((method, path, body))
        route = {
            ("GET", "/"): self._root,
            ("GET", "/api/version"): self._version,
            ("GET", "/api/tags"): self._tags,
            ("GET", "/api/ps"): self._ps,
            ("POST", "/api/show"): self._show,
            ("DELETE", "/api/delete"): self._delete,
            ("POST", "/api/copy"): self._copy,
        }.get((method, path))
        if route is not None:
            status, payload = route(body)
            await self._send(writer, status, payload)
        elif (method, path) == ("POST", "/api/pull"):
            await self._pull(writer, body)
        elif (method, path) in (("POST", "/api/chat"), ("POST", "/api/generate")):
            await self._answer(reader, writer, path, body)
        elif (method, path) == ("POST", "/api/embed"):
            status, payload = self._embed(body)
            await self._send(writer, status, payload)
        elif (method, path) == ("POST", "/api/embeddings"):  # the legacy one: one prompt
            status, payload = self._embed({**body, "input": body.get("prompt", "")})
            if isinstance(payload, dict) and status == 200:
                payload = {"embedding": payload["embeddings"][0]}
            await self._send(writer, status, payload)
        else:
            await self._send(writer, 404, b"404 page not found", ctype=b"text/plain")

    async def _send(
        self,
        writer: asyncio.StreamWriter,
        status: int,
        payload: object,
        ctype: bytes = b"application/json; charset=utf-8",
    ) -> None:
        data = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
        writer.write(response_head(status, ctype, length=len(data)) + data)
        await writer.drain()

    # -- routes

    def _root(self, body: dict[str, object]) -> tuple[int, object]:
        return 200, b"Ollama is running"

    def _version(self, body: dict[str, object]) -> tuple[int, object]:
        return 200, {"version": "0.12.6"}

    def _details(self, m: Stored) -> dict[str, object]:
        return {
            "parent_model": "",
            "format": "gguf",
            "family": m.family,
            "families": [m.family],
            "parameter_size": m.parameter_size,
            "quantization_level": m.quantization,
        }

    def _tags(self, body: dict[str, object]) -> tuple[int, object]:
        models = [
            {
                "name": m.name,
                "model": m.name,
                "modified_at": m.modified_at,
                "size": m.size,
                "digest": m.digest,
                "details": self._details(m),
            }
            for m in self.models.values()
        ]
        return 200, {"models": models}

    def _ps(self, body: dict[str, object]) -> tuple[int, object]:
        models = [
            {
                "name": m.name,
                "model": m.name,
                "size": m.size,
                "size_vram": m.size,
                "digest": m.digest,
                "details": self._details(m),
                "expires_at": "2099-01-01T00:00:00Z",
                "context_length": 4096,
            }
            for m in self.models.values()
            if m.name in self.loaded
        ]
        models.sort(key=lambda m: -self._used.get(str(m["name"]), 0.0))
        return 200, {"models": models}

    # -- memory: load, evict, answer

    async def _load(self, name: str) -> None:
        if name in self.loaded:
            self._used[name] = time.monotonic()
            return
        need = self.models[name].size
        if self.vram:
            # Least recently used first, as Ollama picks; this one does not wait for a
            # model's requests to end (see the module's docstring).
            for other in sorted(self.loaded, key=lambda m: self._used.get(m, 0.0)):
                if sum(self.models[m].size for m in self.loaded) + need <= self.vram:
                    break
                self.loaded.discard(other)
                self.evicted.append(other)
                if self.running.get(other):
                    self.evicted_running.append((other, name))
        if self.hold_loads:
            gate = asyncio.get_running_loop().create_future()
            self._gates.append(gate)
            await gate
        elif self.load_time:
            await asyncio.sleep(self.load_time)
        self.loads.append(name)
        self.loaded.add(name)
        self._used[name] = time.monotonic()

    async def _answer(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        path: str,
        body: dict[str, object],
    ) -> None:
        chat = path == "/api/chat"
        name = canonical(str(body.get("model") or ""))
        stream = body.get("stream", True) is not False
        m = self.models.get(name)
        if m is None:
            await self._send(writer, 404, {"error": f"model '{body.get('model')}' not found"})
            return
        if self.busy:
            self.busy -= 1
            self.busy_answered += 1
            extra = b"retry-after: %s\r\n" % self.busy_retry_after.encode() if (
                self.busy_retry_after is not None) else b""  # fmt: skip
            data = json.dumps({"error": "server busy, please try again"}).encode()
            writer.write(response_head(self.busy_status, b"application/json", extra,
                                       length=len(data)) + data)  # fmt: skip
            await writer.drain()
            return
        messages = body.get("messages") if chat else None
        prompt = "" if chat else str(body.get("prompt") or "")
        empty = (not messages) if chat else not prompt
        if empty and body.get("keep_alive") in (0, "0", "0s"):
            self.unloads.append(name)
            self.loaded.discard(name)
            await self._final(writer, chat, name, stream, "", "unload")
            return
        self.running[name] = self.running.get(name, 0) + 1
        try:
            await self._load(name)
            if empty:
                await self._final(writer, chat, name, stream, "", "load")
                return
            last = ""
            if isinstance(messages, list):
                users = [x for x in messages if isinstance(x, dict) and x.get("role") == "user"]
                last = str(users[-1].get("content", "")) if users else ""
            else:
                last = prompt
            self.served.append((name, last))
            if self.hold_answers:
                gate = asyncio.get_running_loop().create_future()
                self._answer_gates.append(gate)
                await gate
            elif self.answer_time:
                await asyncio.sleep(self.answer_time)
            if name not in self.loaded:
                # Evicted under this very request: what a scheduler must never allow.
                self.evicted_running.append((name, "?"))
            self._used[name] = time.monotonic()
            if stream and self.stream_chunks:
                await self._chunks(reader, writer, chat, name)
                return
            await self._final(writer, chat, name, stream, f"answer from {name}", "stop")
        finally:
            self.running[name] -= 1

    async def _chunks(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, chat: bool, name: str
    ) -> None:
        """`stream_chunks` content chunks, then the final line, or a stall."""
        created = "2025-10-26T17:21:21.196249Z"
        writer.write(response_head(200, b"application/x-ndjson"))
        for i in range(self.stream_chunks):
            if self.stall_after is not None and i == self.stall_after:
                await writer.drain()
                self.stalled += 1
                try:
                    await reader.read()  # until the gateway closes the connection
                    self.abandoned += 1
                finally:
                    self.stalled -= 1
                writer.close()
                return
            obj: dict[str, object] = {"model": name, "created_at": created, "done": False}
            if chat:
                obj["message"] = {"role": "assistant", "content": "tok "}
            else:
                obj["response"] = "tok "
            writer.write(chunk(json.dumps(obj).encode() + b"\n"))
            await writer.drain()
        out: dict[str, object] = {"model": name, "created_at": created, "done": True,
                                  "done_reason": "stop", "prompt_eval_count": 3,
                                  "eval_count": self.stream_chunks}  # fmt: skip
        if chat:
            out["message"] = {"role": "assistant", "content": ""}
        else:
            out["response"] = ""
        writer.write(chunk(json.dumps(out).encode() + b"\n") + b"0\r\n\r\n")
        await writer.drain()

    async def _final(
        self, writer: asyncio.StreamWriter, chat: bool, name: str, stream: bool, text: str,
        reason: str,
    ) -> None:  # fmt: skip
        created = "2025-10-26T17:21:21.196249Z"
        out: dict[str, object] = {"model": name, "created_at": created}
        if chat:
            out["message"] = {"role": "assistant", "content": text}
        else:
            out["response"] = text
        out.update({"done": True, "done_reason": reason, "total_duration": 1000,
                    "load_duration": 10, "prompt_eval_count": 3, "prompt_eval_duration": 100,
                    "eval_count": 3, "eval_duration": 100})  # fmt: skip
        if not stream:
            await self._send(writer, 200, out)
            return
        first: dict[str, object] = {"model": name, "created_at": created, "done": False}
        if chat:
            first["message"] = {"role": "assistant", "content": text}
            out["message"] = {"role": "assistant", "content": ""}
        else:
            first["response"] = text
            out["response"] = ""
        writer.write(response_head(200, b"application/x-ndjson"))
        for obj in (first, out) if text else (out,):
            writer.write(chunk(json.dumps(obj).encode() + b"\n"))
        writer.write(b"0\r\n\r\n")
        await writer.drain()

    def _embed(self, body: dict[str, object]) -> tuple[int, object]:
        """Ollama's /api/embed: one fixed 4-dimensional vector per input (a string or a
        list of them); an empty input list embeds nothing, as Ollama does. The fuzz
        tests (test_fuzz.py) send every embedding route here."""
        name = canonical(str(body.get("model") or ""))
        if name not in self.models:
            return 404, {"error": f"model '{body.get('model')}' not found"}
        given = body.get("input", "")
        inputs = given if isinstance(given, list) else [given]
        return 200, {
            "model": name,
            "embeddings": [[0.5, -0.5, 0.25, 0.0] for _ in inputs],
            "total_duration": 1000,
            "load_duration": 10,
            "prompt_eval_count": len(inputs),
        }

    def _show(self, body: dict[str, object]) -> tuple[int, object]:
        m = self.models.get(canonical(str(body.get("model") or body.get("name"))))
        if m is None:
            return 404, {"error": f"model '{body.get('model')}' not found"}
        return 200, {
            "license": "",
            "modelfile": "",
            "parameters": "",
            "template": "{{ .Prompt }}",
            "details": self._details(m),
            "model_info": {"general.architecture": m.family, f"{m.family}.context_length": 8192},
            "capabilities": ["completion", "tools"],
            "modified_at": m.modified_at,
        }

    def _delete(self, body: dict[str, object]) -> tuple[int, object]:
        key = canonical(str(body.get("model") or body.get("name")))
        if key not in self.models:
            return 404, {"error": f"model '{body.get('model')}' not found"}
        del self.models[key]
        self.loaded.discard(key)
        return 200, b""

    def _copy(self, body: dict[str, object]) -> tuple[int, object]:
        src = self.models.get(canonical(str(body.get("source"))))
        if src is None:
            return 404, {"error": f'model "{body.get("source")}" not found'}
        dst = canonical(str(body.get("destination")))
        self.models[dst] = Stored(dst, src.size, src.digest, src.family, src.parameter_size,
                                  src.quantization)  # fmt: skip
        return 200, b""

    async def _pull(self, writer: asyncio.StreamWriter, body: dict[str, object]) -> None:
        name = canonical(str(body.get("model") or body.get("name")))
        stream = body.get("stream", True) is not False
        lines: list[dict[str, object]] = []

        async def emit(obj: dict[str, object]) -> None:
            if stream:
                writer.write(chunk(json.dumps(obj).encode() + b"\n"))
                await writer.drain()
                if self.delay:
                    await asyncio.sleep(self.delay)
            else:
                lines.append(obj)

        if stream:
            writer.write(response_head(200, b"application/x-ndjson"))
        start = self.partial.get(name, 0)
        self.pulls.append((name, start))
        await emit({"status": "pulling manifest"})
        total = self.registry.get(name)
        if total is None:
            await emit({"error": "pull model manifest: file does not exist"})
        else:
            digest = "sha256:" + _digest(name + "/weights")
            step = max(1, total // self.steps)
            done = start
            failed = False
            await emit({"status": f"pulling {digest[7:19]}", "digest": digest, "total": total,
                        **({"completed": done} if done else {})})  # fmt: skip
            while done < total:
                done = min(total, done + step)
                self.partial[name] = done
                fail_at = self.fail_once_at.get(name)
                if name in self.fail_always or (fail_at is not None and done >= fail_at):
                    self.fail_once_at.pop(name, None)
                    await emit(
                        {"error": "max retries exceeded: read tcp: connection reset by peer"}
                    )
                    failed = True
                    break
                await emit({"status": f"pulling {digest[7:19]}", "digest": digest,
                            "total": total, "completed": done})  # fmt: skip
                if self.hold_pull_at and done >= self.hold_pull_at:
                    self.hold_pull_at = 0  # once: the next pull runs through
                    gate = asyncio.get_running_loop().create_future()
                    self._pull_gates.append(gate)
                    await gate
            if not failed:
                small = "sha256:" + _digest(name + "/params")
                await emit({"status": f"pulling {small[7:19]}", "digest": small, "total": 96,
                            "completed": 96})  # fmt: skip
                for status in ("verifying sha256 digest", "writing manifest"):
                    await emit({"status": status})
                # The manifest is written before Ollama says success.
                self.partial.pop(name, None)
                self.models[name] = Stored(name, total + 96, _digest(name))
                await emit({"status": "success"})
        if stream:
            writer.write(b"0\r\n\r\n")
            await writer.drain()
            return
        last = lines[-1]
        await self._send(writer, 500 if "error" in last else 200, last)
