"""Any OpenAI-compatible server: vLLM, llama.cpp's server, LM Studio, OpenRouter, OpenAI.

The configured url is the API base including `/v1` (`https://openrouter.ai/api/v1`),
and requests go to `{url}/chat/completions`, as every OpenAI SDK does it.
"""

from __future__ import annotations

import hashlib
from collections.abc import AsyncIterator
from typing import Literal

from aistack.backends.base import (
    ChunkStream,
    HttpBackend,
    HttpSettings,
    mid_stream_error,
    single,
)
from aistack.backends.transport import Endpoint, HttpClient, Response, TransportError
from aistack.core.chat import ChatRequest, EmbedRequest, EmbedResult, GenerateRequest, unit
from aistack.core.errors import ErrorKind, GatewayError
from aistack.core.events import Chunk
from aistack.core.models import ModelCard, ModelShow
from aistack.dialects.ollama.convert import upstream_error
from aistack.dialects.openai import convert
from aistack.dialects.openai.stream import StreamDecoder


class OpenAIBackend(HttpBackend):
    kind = "openai"
    unmanaged_reason = (
        "the OpenAI API has no pull or delete; manage models on that server "
        "(vLLM, llama.cpp, LM Studio, the provider's console)"
    )

    def __init__(
        self,
        name: str,
        endpoint: Endpoint,
        client: HttpClient,
        s: HttpSettings,
        *,
        sampling_extras: bool | None = None,
    ) -> None:
        super().__init__(name, endpoint, client, s)
        # OpenAI itself rejects top_k & co.; everything else compatible accepts them.
        self.sampling_extras = (
            sampling_extras if sampling_extras is not None else endpoint.host != "api.openai.com"
        )

    def status_error(self, status: int, body: object) -> GatewayError:
        msg = convert.error_message_from_wire(body) if body is not None else "no details"
        if status == 404 and isinstance(body, str | type(None)):
            return GatewayError(
                ErrorKind.UPSTREAM_ERROR,
                f"backend '{self.name}' has no OpenAI API at {self.settings.url} (404); "
                "its url must be the API base, usually ending in /v1",
                status=502,
                backend=self.name,
            )
        err = upstream_error(status, msg, self.name)
        if status == 429:
            err.kind = ErrorKind.UPSTREAM_ERROR
        code = convert.error_code_from_wire(body)
        if code == "context_length_exceeded":
            err.code = code  # llama.cpp, vLLM and OpenAI say so; the router falls back on it
        return err

    async def list_models(self) -> list[ModelCard]:
        return convert.models_from_wire(await self.get_json("/models"), self.name)

    async def probe(self) -> None:
        resp = await self.send("GET", "/models", probe=True)
        try:
            body = await resp.read()
        except TransportError as e:
            raise self.unreachable(e) from None
        if resp.status != 200:
            raise self.error_for(resp, body.decode("utf-8", "replace")[:500])

    async def show(self, card: ModelCard) -> ModelShow:
        # OpenAI-compatible servers say little about a model; describe what we know.
        arch = "unknown"
        info: dict[str, object] = {"general.architecture": arch, "general.basename": card.name}
        if card.context_length:
            info[f"{arch}.context_length"] = card.context_length
        return ModelShow(
            card=card,
            model_info=info,
            capabilities=card.capabilities or ("completion", "tools"),
        )

    async def chat(self, req: ChatRequest, model: str) -> ChunkStream:
        if not req.messages:
            # Ollama's "load the model" convention; an OpenAI server has nothing to load.
            return single(Chunk(finish="load"))
        body = convert.chat_request_to_wire(
            req, model, req.stream, sampling_extras=self.sampling_extras
        )
        return await self._run("/chat/completions", body, req.stream, "chat")

    async def generate(self, req: GenerateRequest, model: str) -> ChunkStream:
        if not req.raw:
            # A templated prompt is a one-turn chat; the server applies its template.
            return await self.chat(req.as_chat(), model)
        body = convert.completion_request_to_wire(
            req, model, req.stream, sampling_extras=self.sampling_extras
        )
        return await self._run("/completions", body, req.stream, "completion")

    async def _run(
        self,
        path: str,
        body: dict[str, object],
        stream: bool,
        kind: Literal["chat", "completion"],
    ) -> ChunkStream:
        resp = await self.send("POST", path, body)
        await self.check_status(resp)
        if not stream:
            obj = await self.read_object(resp, path)
            return single(convert.chat_chunk_from_response(obj, self.name))
        return ChunkStream(self._stream(resp, kind), resp)

    async def _stream(
        self, resp: Response, kind: Literal["chat", "completion"]
    ) -> AsyncIterator[Chunk]:
        decoder = StreamDecoder(self.name, kind)
        try:
            async for _event, data in resp.iter_sse():
                if data == b"[DONE]":
                    break
                obj = self.frame(data, "event")
                if obj is None:
                    continue
                chunk = decoder.feed(obj)
                if chunk is not None:
                    yield chunk
        except TransportError as e:
            raise mid_stream_error(self.name, e) from None
        finally:
            resp.close()
        yield decoder.end()

    async def embed(self, req: EmbedRequest, model: str) -> EmbedResult:
        if not req.inputs:
            return EmbedResult(model=model, embeddings=[])
        body = convert.embed_request_to_wire(req, model)
        obj = await self.get_json("/embeddings", body, probe=False)
        result = convert.embed_result_from_wire(obj, model)
        if not req.normalize:
            return result
        return EmbedResult(
            model=result.model,
            embeddings=[unit(v) for v in result.embeddings],
            prompt_tokens=result.prompt_tokens,
        )


def synthetic_digest(backend: str, name: str) -> str:
    """OpenAI servers have no digests; a stable one keeps clients that index by it happy."""
    return hashlib.sha256(f"{backend}/{name}".encode()).hexdigest()
