"""Any OpenAI-compatible server: vLLM, llama.cpp's server, LM Studio, OpenRouter, OpenAI.

The configured url is the API base including `/v1` (`https://openrouter.ai/api/v1`),
and requests go to `{url}/chat/completions`, as every OpenAI SDK does it.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import ClassVar, Literal

from aistack.backends.base import ChunkStream, Kind, single
from aistack.backends.errors import upstream_error
from aistack.backends.http import (
    HttpBackend,
    HttpConfig,
    HttpSettings,
    http_settings,
    mid_stream_error,
)
from aistack.backends.transport import Endpoint, HttpClient, Response, TransportError, parse_url
from aistack.core.chat import ChatRequest, EmbedRequest, EmbedResult, GenerateRequest, unit
from aistack.core.errors import ErrorKind, GatewayError
from aistack.core.events import Chunk
from aistack.core.models import ModelCard
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

    def status_error(
        self, status: int, body: object, retry_after: float | None = None
    ) -> GatewayError:
        msg = convert.error_message_from_wire(body) if body is not None else "no details"
        if status == 404 and isinstance(body, str | type(None)):
            return GatewayError(
                ErrorKind.UPSTREAM_FAILED,
                f"backend '{self.name}' has no OpenAI API at {self.settings.url} (404); "
                "its url must be the API base, usually ending in /v1",
                backend=self.name,
                upstream_status=status,
            )
        # llama.cpp, vLLM and OpenAI say context_length_exceeded; the router falls back on it.
        code = convert.error_code_from_wire(body)
        return upstream_error(status, msg, self.name, code=code, retry_after=retry_after)

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


class OpenAIConfig(HttpConfig):
    """The keys of an OpenAI-compatible server: the API base as `url` (with /v1)."""

    # Send top_k, min_p, repeat_penalty (OpenAI itself rejects them). Default: yes,
    # except to api.openai.com.
    sampling_extras: bool | None = None

    BILLING: ClassVar[str] = "metered"


def _build(c: OpenAIConfig, client: HttpClient) -> OpenAIBackend:
    s = http_settings(c)
    return OpenAIBackend(c.name, parse_url(s.url), client, s, sampling_extras=c.sampling_extras)


KIND = Kind("openai", OpenAIConfig, _build)
