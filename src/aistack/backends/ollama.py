"""A real Ollama server, called with its native API (`/api/*`)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator

import msgspec
import orjson

from aistack.backends.base import ChunkStream, Kind, single
from aistack.backends.errors import upstream_error
from aistack.backends.http import HttpBackend, HttpConfig, http_settings, mid_stream_error
from aistack.backends.transport import HttpClient, Response, Timeouts, TransportError, parse_url
from aistack.core.chat import ChatRequest, EmbedRequest, EmbedResult, GenerateRequest
from aistack.core.errors import ErrorKind, GatewayError
from aistack.core.events import Chunk
from aistack.core.fleet import PullProgress
from aistack.core.models import LoadedModel, ModelCard, ModelShow, parse_size
from aistack.dialects.ollama import convert
from aistack.dialects.ollama.fleet import progress_from_wire


class OllamaBackend(HttpBackend):
    kind = "ollama"

    def status_error(
        self, status: int, body: object, retry_after: float | None = None
    ) -> GatewayError:
        message = convert.error_message_from_wire(body)
        if message is not None:
            return upstream_error(status, message, self.name, retry_after=retry_after)
        text = body if isinstance(body, str) else "no details"
        if status == 404 and isinstance(body, str) and "page not found" in body:
            # gin's plain-text 404: the URL is wrong, not the model.
            return GatewayError(
                ErrorKind.UPSTREAM_FAILED,
                f"backend '{self.name}' has no Ollama API at {self.settings.url} "
                "(404 page not found); its url must be the server root, without /api or /v1",
                backend=self.name,
                upstream_status=status,
            )
        return upstream_error(
            status, f"status {status}: {text}", self.name, retry_after=retry_after
        )

    async def list_models(self) -> list[ModelCard]:
        return convert.tags_from_wire(await self.get_json("/api/tags"), self.name)

    async def show(self, card: ModelCard) -> ModelShow:
        obj = await self.get_json("/api/show", {"model": card.name})
        return convert.show_from_wire(obj, card)

    async def ps(self) -> list[LoadedModel]:
        return convert.ps_from_wire(await self.get_json("/api/ps"), self.name)

    async def version(self) -> str:
        return str((await self.get_json("/api/version")).get("version", ""))

    async def probe(self) -> None:
        await self.version()

    async def chat(self, req: ChatRequest, model: str) -> ChunkStream:
        body = convert.chat_request_to_wire(req, model, req.stream)
        return await self._run("/api/chat", body, req.stream)

    async def generate(self, req: GenerateRequest, model: str) -> ChunkStream:
        body = convert.generate_request_to_wire(req, model, req.stream)
        return await self._run("/api/generate", body, req.stream)

    async def _run(self, path: str, body: dict[str, object], stream: bool) -> ChunkStream:
        resp = await self.send("POST", path, body)
        await self.check_status(resp)
        if not stream:
            obj = await self.read_object(resp, path)
            return single(convert.chunk_from_wire(obj, self.name))
        return ChunkStream(self._stream(resp), resp)

    async def _stream(self, resp: Response) -> AsyncIterator[Chunk]:
        finished = False
        try:
            async for line in resp.iter_lines():
                obj = self.frame(line)
                if obj is None:
                    continue
                chunk = convert.chunk_from_wire(obj, self.name)
                finished = chunk.finish is not None
                yield chunk
                if finished:
                    break
        except TransportError as e:
            raise mid_stream_error(self.name, e) from None
        finally:
            resp.close()
        if not finished:
            raise self.ended_early("the stream")

    async def embed(self, req: EmbedRequest, model: str) -> EmbedResult:
        if req.normalize:
            body = convert.embed_request_to_wire(req, model)
            obj = await self.get_json("/api/embed", body, probe=False)
            return convert.embed_result_from_wire(obj, model)
        # Legacy, unnormalized vectors: one /api/embeddings call per input.
        vectors: list[list[float]] = []
        for text in req.inputs:
            legacy: dict[str, object] = {"model": model, "prompt": text}
            if req.options:
                legacy["options"] = req.options
            if req.keep_alive is not None:
                legacy["keep_alive"] = req.keep_alive
            obj = await self.get_json("/api/embeddings", legacy, probe=False)
            emb = obj.get("embedding")
            vectors.append(emb if isinstance(emb, list) else [])
        return EmbedResult(model=model, embeddings=vectors)

    # -- memory (a ModelMemory): Ollama's empty request loads, with keep_alive 0 unloads

    async def load(self, model: str, keep_alive: float | str | None = None) -> None:
        body: dict[str, object] = {"model": model, "prompt": "", "stream": False}
        if keep_alive is not None:
            body["keep_alive"] = keep_alive
        await self.get_json("/api/generate", body, probe=False)

    async def unload(self, model: str) -> None:
        body = {"model": model, "prompt": "", "keep_alive": 0, "stream": False}
        await self.get_json("/api/generate", body, probe=False)

    # -- model management (a ModelStore): /api/pull, /api/delete, /api/copy

    def _pull_timeouts(self) -> Timeouts:
        # A pull lasts as long as the download: no total limit, but a stalled one fails.
        t = self.settings.timeouts
        return Timeouts(connect=t.connect, first_byte=t.first_byte, idle=t.idle or 300.0)

    async def pull(self, model: str, *, insecure: bool = False) -> AsyncIterator[PullProgress]:
        body = orjson.dumps({"model": model, "insecure": insecure, "stream": True})
        try:
            resp = await self.client.request(
                "POST",
                self.endpoint,
                "/api/pull",
                body=body,
                headers=self._headers,
                timeouts=self._pull_timeouts(),
            )
        except TransportError as e:
            raise self.unreachable(e) from None
        finished = False
        try:
            await self.check_status(resp)
            async for line in resp.iter_lines():
                obj = self.frame(line)
                if obj is None:
                    continue
                p = progress_from_wire(obj, self.name)
                yield p
                if p.done:
                    finished = True
                    break
        except TransportError as e:
            raise mid_stream_error(self.name, e) from None
        finally:
            resp.close()
        if not finished:
            raise GatewayError(
                ErrorKind.UPSTREAM_FAILED,
                f"backend '{self.name}' ended the pull of '{model}' before it finished; "
                "pull again to resume",
                backend=self.name,
            )

    async def delete(self, model: str) -> None:
        await self._manage("DELETE", "/api/delete", {"model": model})

    async def copy(self, source: str, destination: str) -> None:
        await self._manage("POST", "/api/copy", {"source": source, "destination": destination})

    async def _manage(self, method: str, path: str, body: dict[str, object]) -> None:
        """Delete and copy answer 200 with an empty body, or an error."""
        resp = await self.send(method, path, body)
        if resp.status != 200:
            await self.check_status(resp)
        try:
            await resp.read()
        except TransportError as e:
            raise self.unreachable(e) from None


class OllamaConfig(HttpConfig):
    """An Ollama instance: what `HttpConfig` has, plus its memory."""

    # The GPU memory it may use (24GiB, 16GB): which models fit together there, so a
    # cold model goes where it fits and two that do not fit take turns instead of
    # evicting each other. Unset: learned from /api/ps once an eviction is seen.
    # Backends with the same `gpu:` share one budget (the largest they declare).
    vram: int | str | None = None
    # Models loaded when the gateway starts and whenever the instance comes back.
    preload: list[str] = msgspec.field(default_factory=list)

    def problems(self) -> Iterator[tuple[str, str]]:
        yield from super().problems()
        if self.vram is not None:
            try:
                if parse_size(self.vram) <= 0:
                    yield "vram", "must be more than 0 bytes"
            except ValueError as e:
                yield "vram", str(e)
        for j, m in enumerate(self.preload):
            if not m or not isinstance(m, str):
                yield f"preload[{j}]", "must be a model name"

    @property
    def vram_bytes(self) -> int:
        return parse_size(self.vram) if self.vram is not None else 0


def _build(c: OllamaConfig, client: HttpClient) -> OllamaBackend:
    s = http_settings(c)
    return OllamaBackend(c.name, parse_url(s.url), client, s)


KIND = Kind("ollama", OllamaConfig, _build)
