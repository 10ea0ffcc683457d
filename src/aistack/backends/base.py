"""The one protocol every backend implements, and what HTTP backends share.

A backend turns a core request into a stream of core chunks. Awaiting `chat` or
`generate` sends the request and waits for the backend to accept it, so every failure
before the first byte (unreachable, 404, 429, timeout) raises here, where it can still
be retried elsewhere or shown with a real status. The stream it returns yields chunks;
the last has `finish` set; a failure mid-stream raises a `GatewayError` from the
iterator, never a silent end.
"""

from __future__ import annotations

import time
from abc import ABC, abstractmethod
from collections.abc import AsyncIterator
from dataclasses import dataclass
from email.utils import parsedate_to_datetime
from typing import Any

import orjson

from aistack.backends.transport import (
    ConnectError,
    Endpoint,
    HttpClient,
    Response,
    Timeouts,
    TransportError,
    TransportTimeout,
)
from aistack.core.chat import ChatRequest, EmbedRequest, EmbedResult, GenerateRequest
from aistack.core.errors import ErrorKind, GatewayError
from aistack.core.events import Chunk
from aistack.core.fleet import PullProgress
from aistack.core.models import LoadedModel, ModelCard, ModelShow


class ChunkStream:
    """The chunks of one answer, and the connection they come from.

    `aclose()` always releases the connection, even if iteration never started (an
    async generator that never ran would not run its `finally`).
    """

    __slots__ = ("_closer", "_it")

    def __init__(self, it: AsyncIterator[Chunk], closer: Response | None = None) -> None:
        self._it = it
        self._closer = closer

    def __aiter__(self) -> ChunkStream:
        return self

    async def __anext__(self) -> Chunk:
        return await self._it.__anext__()

    async def aclose(self) -> None:
        try:
            aclose = getattr(self._it, "aclose", None)
            if aclose is not None:
                await aclose()
        finally:
            if self._closer is not None:
                self._closer.close()


class Backend(ABC):
    """A machine (or library) that runs models.

    Capabilities are attributes, as in simonw/llm: the service checks them before
    calling, so "this backend cannot do that" is a clear 400, not a backend error.
    """

    kind: str = ""
    supports_embeddings: bool = True
    supports_generate: bool = True
    # Whether `probe` asks something over the network (the health monitor skips the rest).
    probes: bool = False

    def __init__(self, name: str) -> None:
        self.name = name

    async def start(self) -> None:  # noqa: B027  # optional hook
        """Called once when the gateway starts; must not block on slow backends."""

    async def close(self) -> None:  # noqa: B027  # optional hook
        """Release connections, threads and models."""

    @abstractmethod
    async def list_models(self) -> list[ModelCard]:
        """What the backend has now (pulled, served or loaded)."""

    @abstractmethod
    async def show(self, card: ModelCard) -> ModelShow: ...

    async def ps(self) -> list[LoadedModel]:
        return []

    async def probe(self) -> None:  # noqa: B027  # optional hook
        """A cheap liveness check; raises a `GatewayError` when the backend is not serving."""

    @abstractmethod
    async def chat(self, req: ChatRequest, model: str) -> ChunkStream: ...

    @abstractmethod
    async def generate(self, req: GenerateRequest, model: str) -> ChunkStream: ...

    @abstractmethod
    async def embed(self, req: EmbedRequest, model: str) -> EmbedResult: ...

    async def unload(self, model: str) -> None:  # noqa: B027  # optional hook
        """Free the model's memory if the backend can (Ollama keep_alive: 0)."""

    def describe(self) -> dict[str, object]:
        return {"name": self.name, "kind": self.kind}

    # -- model management (pull, delete, copy): only a backend with a model store can

    manages_models: bool = False
    # Why it cannot, in words an operator can act on.
    unmanaged_reason: str = "it has no model store aistack can manage"

    def pull(self, model: str, *, insecure: bool = False) -> AsyncIterator[PullProgress]:
        """Download a model: progress items, the last one `success`. A refusal (unknown
        model, unreachable backend) raises from the first step, before any progress."""
        raise self.cannot("pull")

    async def delete(self, model: str) -> None:
        raise self.cannot("delete")

    async def copy(self, source: str, destination: str) -> None:
        raise self.cannot("copy")

    def cannot(self, verb: str) -> GatewayError:
        return GatewayError(
            ErrorKind.INVALID_REQUEST,
            f"backend '{self.name}' ({self.kind}) cannot {verb} models: {self.unmanaged_reason}",
            backend=self.name,
        )


@dataclass(frozen=True, slots=True)
class HttpSettings:
    """What an HTTP backend needs from the config."""

    url: str
    api_key: str | None = None
    headers: tuple[tuple[str, str], ...] = ()
    timeouts: Timeouts = Timeouts()  # noqa: RUF009  # frozen, safe to share
    # Short timeout for listing and probing, so a dead box never stalls /api/tags.
    probe_timeout: float = 3.0


class HttpBackend(Backend):
    """Shared plumbing for backends reached over HTTP: one pool, errors mapped once."""

    probes = True

    def __init__(self, name: str, endpoint: Endpoint, client: HttpClient, s: HttpSettings):
        super().__init__(name)
        self.endpoint = endpoint
        self.client = client
        self.settings = s
        hdrs = [(b"content-type", b"application/json"), (b"accept", b"application/json")]
        hdrs += [(k.lower().encode(), v.encode()) for k, v in s.headers]
        if s.api_key:
            hdrs.append((b"authorization", b"Bearer " + s.api_key.encode()))
        self._headers = hdrs
        self._probe = Timeouts(
            connect=min(s.probe_timeout, s.timeouts.connect or s.probe_timeout),
            first_byte=s.probe_timeout,
            idle=s.probe_timeout,
            total=s.probe_timeout * 2,
        )

    def describe(self) -> dict[str, object]:
        return {"name": self.name, "kind": self.kind, "url": self.settings.url}

    def unreachable(self, e: TransportError) -> GatewayError:
        if isinstance(e, ConnectError):
            return GatewayError(
                ErrorKind.UPSTREAM_UNREACHABLE,
                f"backend '{self.name}' ({self.settings.url}) is unreachable: {e}",
                backend=self.name,
            )
        if isinstance(e, TransportTimeout):
            return GatewayError(
                ErrorKind.UPSTREAM_TIMEOUT,
                f"backend '{self.name}' timed out ({e.phase}): {e}",
                backend=self.name,
            )
        return GatewayError(
            ErrorKind.UPSTREAM_UNREACHABLE,
            f"backend '{self.name}' broke the connection: {e}",
            backend=self.name,
        )

    async def send(
        self,
        method: str,
        path: str,
        body: object | None = None,
        *,
        probe: bool = False,
    ) -> Response:
        """Send a request; transport failures become gateway errors naming the backend."""
        payload = orjson.dumps(body) if body is not None else None
        try:
            return await self.client.request(
                method,
                self.endpoint,
                path,
                body=payload,
                headers=self._headers,
                timeouts=self._probe if probe else self.settings.timeouts,
            )
        except TransportError as e:
            raise self.unreachable(e) from None

    async def read_json(self, resp: Response) -> object:
        try:
            raw = await resp.read()
        except TransportError as e:
            raise self.unreachable(e) from None
        try:
            return orjson.loads(raw) if raw else None
        except orjson.JSONDecodeError:
            raise GatewayError(
                ErrorKind.UPSTREAM_ERROR,
                f"backend '{self.name}' answered something that is not JSON "
                f"(status {resp.status}): {raw[:200]!r}",
                status=502,
                backend=self.name,
            ) from None

    async def get_json(
        self, path: str, body: object | None = None, *, probe: bool = True
    ) -> dict[str, Any]:
        """A request (GET, or POST with a body) whose answer must be a JSON object with
        status 200. `probe`: the short timeouts for listing and probing."""
        resp = await self.send("POST" if body is not None else "GET", path, body, probe=probe)
        obj = await self.read_json(resp)
        if resp.status != 200:
            raise self.error_for(resp, obj)
        return self.object_of(obj, path)

    async def read_object(self, resp: Response, path: str) -> dict[str, Any]:
        """A 200 answer's body, which must be a JSON object."""
        return self.object_of(await self.read_json(resp), path)

    def object_of(self, obj: object, path: str) -> dict[str, Any]:
        if not isinstance(obj, dict):
            raise GatewayError(
                ErrorKind.UPSTREAM_ERROR,
                f"backend '{self.name}' answered {path} with a non-object",
                status=502,
                backend=self.name,
            )
        return obj

    def frame(self, data: bytes, what: str = "line") -> dict[str, Any] | None:
        """One streamed JSON frame (an NDJSON line, an SSE event's data): an object, or
        None for valid JSON that is not one; anything else is the backend's fault."""
        try:
            obj = orjson.loads(data)
        except orjson.JSONDecodeError:
            raise GatewayError(
                ErrorKind.UPSTREAM_ERROR,
                f"backend '{self.name}' sent a {what} that is not JSON: {data[:200]!r}",
                status=502,
                backend=self.name,
            ) from None
        return obj if isinstance(obj, dict) else None

    def ended_early(self, what: str) -> GatewayError:
        return GatewayError(
            ErrorKind.UPSTREAM_ERROR,
            f"backend '{self.name}' ended {what} before it was done",
            status=502,
            backend=self.name,
        )

    @abstractmethod
    def status_error(self, status: int, body: object) -> GatewayError:
        """Turn a non-200 answer into the error the caller should see."""

    def error_for(self, resp: Response, body: object) -> GatewayError:
        """`status_error`, plus the backend's Retry-After (the router honours it)."""
        e = self.status_error(resp.status, body)
        ra = resp.header("retry-after")
        if ra is not None:
            e.retry_after = parse_retry_after(ra)
        return e

    async def check_status(self, resp: Response) -> None:
        if resp.status != 200:
            body = await self.read_json_lenient(resp)
            raise self.error_for(resp, body)

    async def read_json_lenient(self, resp: Response) -> object:
        try:
            raw = await resp.read()
        except TransportError:
            return None
        try:
            return orjson.loads(raw)
        except orjson.JSONDecodeError:
            return raw.decode("utf-8", "replace")[:500]

    async def close(self) -> None:
        # The client is shared by all HTTP backends; the gateway closes it.
        return None


def parse_retry_after(value: str) -> float | None:
    """Retry-After in seconds, from delta-seconds or an HTTP date; None if unreadable."""
    v = value.strip()
    try:
        return max(0.0, float(v))
    except ValueError:
        pass
    try:
        when = parsedate_to_datetime(v)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        return None
    return max(0.0, when.timestamp() - time.time())


def mid_stream_error(backend: str, e: TransportError) -> GatewayError:
    if isinstance(e, TransportTimeout):
        return GatewayError(
            ErrorKind.UPSTREAM_TIMEOUT,
            f"backend '{backend}' timed out mid-stream ({e.phase})",
            backend=backend,
        )
    return GatewayError(
        ErrorKind.UPSTREAM_UNREACHABLE,
        f"backend '{backend}' failed mid-stream: {e}",
        backend=backend,
    )


class _One:
    """An iterator over one chunk, without the cost of an async generator."""

    __slots__ = ("_chunk",)

    def __init__(self, chunk: Chunk) -> None:
        self._chunk: Chunk | None = chunk

    def __aiter__(self) -> _One:
        return self

    async def __anext__(self) -> Chunk:
        c = self._chunk
        if c is None:
            raise StopAsyncIteration
        self._chunk = None
        return c


def single(chunk: Chunk) -> ChunkStream:
    """A stream of one chunk (a non-streamed answer)."""
    return ChunkStream(_One(chunk))
