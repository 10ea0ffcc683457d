"""A stand-in for an Ollama server's model store: tags, show, ps, pull, delete, copy.

Ollama's store (a registry to pull from, blobs on disk) is a part this machine does
not have, so this small server plays Ollama's documented answers
(shared/reference/ollama-api.md 2.10-2.17): `/api/pull` streams `pulling manifest`,
then per layer `pulling <digest12>` with `total`/`completed`, then `verifying sha256
digest`, `writing manifest`, `success`; an error mid-pull is an `{"error": ...}` line;
a pull that stops keeps its bytes, so the next pull of the same model resumes there
(as Ollama's partial blobs do). Delete and copy answer 200 with an empty body, or 404.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
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
    steps: int = 20  # progress lines per layer
    delay: float = 0.0  # seconds between progress lines
    requests: list[tuple[str, str, dict[str, object]]] = field(default_factory=list)
    server: FaultServer | None = None

    def add(self, name: str, size: int = 1_000_000, **kw: str) -> None:
        self.models[canonical(name)] = Stored(canonical(name), size, _digest(name), **kw)

    # -- server

    def start(self) -> FakeOllama:
        self.server = FaultServer(self._handle).start()
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
        return 200, {"models": models}

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
