"""Anthropic's Messages API: api.anthropic.com, or any server that speaks it.

The configured url is the server root (`https://api.anthropic.com`); requests go to
`{url}/v1/messages`, as the SDKs send them (a url that already ends in `/v1` works too).
The key goes in `x-api-key`, with `anthropic-version`; a caller's `anthropic-beta`
header rides along (ChatRequest.headers), the config's `headers` are added to all.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import ClassVar

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
from aistack.core.chat import ChatRequest
from aistack.core.errors import ErrorKind, GatewayError
from aistack.core.events import Chunk
from aistack.core.models import ModelCard, ModelShow
from aistack.dialects.anthropic import convert
from aistack.dialects.anthropic.stream import StreamDecoder

# Headers of the caller's that an Anthropic backend should see, lower case.
FORWARDED = ("anthropic-beta",)


class AnthropicBackend(HttpBackend):
    kind = "anthropic"
    unmanaged_reason = "Anthropic's API has no pull or delete; its models are Anthropic's"

    def __init__(
        self,
        name: str,
        endpoint: Endpoint,
        client: HttpClient,
        s: HttpSettings,
        *,
        version: str = convert.VERSION,
    ) -> None:
        super().__init__(name, endpoint, client, s)
        hdrs = [(b"content-type", b"application/json"), (b"accept", b"application/json")]
        hdrs.append((b"anthropic-version", version.encode()))
        hdrs += [(k.lower().encode(), v.encode()) for k, v in s.headers]
        if s.api_key:
            hdrs.append((b"x-api-key", s.api_key.encode()))
        self._headers = hdrs
        self._v1 = "" if endpoint.path.endswith("/v1") else "/v1"

    def status_error(
        self, status: int, body: object, retry_after: float | None = None
    ) -> GatewayError:
        msg = convert.error_message_from_wire(body) if body is not None else "no details"
        if status == 404 and not isinstance(body, dict):
            return GatewayError(
                ErrorKind.UPSTREAM_FAILED,
                f"backend '{self.name}' has no Messages API at {self.settings.url} (404); "
                "its url must be the server root (https://api.anthropic.com)",
                backend=self.name,
                upstream_status=status,
            )
        if status == 529:  # Anthropic's "overloaded": unavailable for now (503)
            return upstream_error(503, msg, self.name, retry_after=retry_after).but(
                upstream_status=529
            )
        return upstream_error(status, msg, self.name, retry_after=retry_after)

    async def list_models(self) -> list[ModelCard]:
        cards: list[ModelCard] = []
        after = ""
        for _ in range(50):  # pages of 1000; a bound, not a loop forever
            path = f"{self._v1}/models?limit=1000" + (f"&after_id={after}" if after else "")
            page = await self.get_json(path)
            cards += convert.models_from_wire(page, self.name)
            last = page.get("last_id")
            if not page.get("has_more") or not isinstance(last, str):
                break
            after = last
        return cards

    async def probe(self) -> None:
        resp = await self.send("GET", f"{self._v1}/models?limit=1", probe=True)
        try:
            body = await resp.read()
        except TransportError as e:
            raise self.unreachable(e) from None
        if resp.status != 200:
            raise self.error_for(resp, body.decode("utf-8", "replace")[:500])

    async def show(self, card: ModelCard) -> ModelShow:
        info: dict[str, object] = {"general.architecture": "claude", "general.basename": card.name}
        if card.context_length:
            info["claude.context_length"] = card.context_length
        return ModelShow(
            card=card,
            model_info=info,
            capabilities=card.capabilities or ("completion", "tools", "vision", "thinking"),
        )

    def _with(self, req: ChatRequest) -> list[tuple[bytes, bytes]] | None:
        if not req.headers:
            return None
        extra = [(k.encode(), v.encode()) for k, v in req.headers if k in FORWARDED]
        return self._headers + extra if extra else None

    async def chat(self, req: ChatRequest, model: str) -> ChunkStream:
        if not req.messages:
            return single(Chunk(finish="load"))  # Ollama's "load the model": nothing to load
        body = convert.request_to_wire(req, model, req.stream)
        resp = await self.send("POST", f"{self._v1}/messages", body, headers=self._with(req))
        await self.check_status(resp)
        if not req.stream:
            obj = await self.read_object(resp, "/v1/messages")
            return single(convert.chunk_from_message(obj, self.name))
        return ChunkStream(self._stream(resp), resp)

    async def _stream(self, resp: Response) -> AsyncIterator[Chunk]:
        decoder = StreamDecoder(self.name)
        try:
            async for name, data in resp.iter_sse():
                obj = self.frame(data, "event")
                if obj is None:
                    continue
                chunk = decoder.feed(name, obj)
                if chunk is not None:
                    yield chunk
                    if decoder.done:
                        return
        except TransportError as e:
            raise mid_stream_error(self.name, e) from None
        finally:
            resp.close()
        raise self.ended_early("the stream")

    async def count_tokens(self, req: ChatRequest, model: str) -> int:
        """Anthropic's own count (`/v1/messages/count_tokens`): exact for its models."""
        body = convert.count_request_to_wire(req, model)
        obj = await self.get_json(f"{self._v1}/messages/count_tokens", body, probe=False)
        n = obj.get("input_tokens")
        if not isinstance(n, int):
            raise GatewayError(
                ErrorKind.UPSTREAM_FAILED,
                f"backend '{self.name}' answered count_tokens without input_tokens",
                backend=self.name,
            )
        return n


class AnthropicConfig(HttpConfig):
    """The keys of an Anthropic Messages server: the server root as `url`."""

    # The API version every request names (the anthropic-version header).
    anthropic_version: str = convert.VERSION

    BILLING: ClassVar[str] = "metered"


def _build(c: AnthropicConfig, client: HttpClient) -> AnthropicBackend:
    s = http_settings(c)
    return AnthropicBackend(c.name, parse_url(s.url), client, s, version=c.anthropic_version)


KIND = Kind("anthropic", AnthropicConfig, _build)
