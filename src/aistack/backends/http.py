"""What backends reached over HTTP share: their config keys, one connection pool,
transport failures and non-200 answers turned into gateway errors once."""

from __future__ import annotations

import re
import time
from abc import abstractmethod
from collections.abc import Iterator
from dataclasses import dataclass
from email.utils import parsedate_to_datetime
from typing import Any

import msgspec
import orjson

from aistack.backends.base import Backend, BackendConfig
from aistack.backends.transport import (
    ConnectError,
    Endpoint,
    HttpClient,
    Response,
    Timeouts,
    TransportError,
    TransportTimeout,
)
from aistack.core.errors import ErrorKind, GatewayError


class TimeoutsConfig(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """Seconds; null means no limit. Defaults suit slow local models: a 20B model can take
    a minute to load before its first token, and a non-streamed answer's first byte is
    the whole answer. Connecting is quick on any network, so a dead box costs 5 s once
    before its breaker or the health probe takes it out of rotation."""

    connect: float = 5.0
    first_token: float | None = 600.0
    idle: float | None = 300.0
    total: float | None = None


class HttpConfig(BackendConfig):
    """The keys of a backend reached over HTTP."""

    url: str | None = None
    api_key: str | None = None
    headers: dict[str, str] = msgspec.field(default_factory=dict)
    timeouts: TimeoutsConfig = msgspec.field(default_factory=TimeoutsConfig)

    def problems(self) -> Iterator[tuple[str, str]]:
        if not self.url:
            yield "url", f"required for an {self.kind} backend"
        elif not re.match(r"^https?://[^/\s]+", self.url):
            yield "url", f"{self.url!r} is not an http:// or https:// URL"
        t = self.timeouts
        for name in ("connect", "first_token", "idle", "total"):
            v = getattr(t, name)
            if v is not None and v <= 0:
                yield f"timeouts.{name}", "must be above 0 (or null)"


@dataclass(frozen=True, slots=True)
class HttpSettings:
    """What an HTTP backend needs from the config."""

    url: str
    api_key: str | None = None
    headers: tuple[tuple[str, str], ...] = ()
    timeouts: Timeouts = Timeouts()  # noqa: RUF009  # frozen, safe to share
    # Short timeout for listing and probing, so a dead box never stalls /api/tags.
    probe_timeout: float = 3.0


def http_settings(c: HttpConfig) -> HttpSettings:
    t = c.timeouts
    assert c.url is not None
    return HttpSettings(
        url=c.url.rstrip("/"),
        api_key=c.api_key or None,
        headers=tuple(c.headers.items()),
        timeouts=Timeouts(connect=t.connect, first_byte=t.first_token, idle=t.idle, total=t.total),
    )


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
        headers: list[tuple[bytes, bytes]] | None = None,
    ) -> Response:
        """Send a request; transport failures become gateway errors naming the backend.
        `headers`: instead of the backend's own (which they must include)."""
        payload = orjson.dumps(body) if body is not None else None
        try:
            return await self.client.request(
                method,
                self.endpoint,
                path,
                body=payload,
                headers=headers or self._headers,
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
                ErrorKind.UPSTREAM_FAILED,
                f"backend '{self.name}' answered something that is not JSON "
                f"(status {resp.status}): {raw[:200]!r}",
                backend=self.name,
                upstream_status=resp.status,
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
                ErrorKind.UPSTREAM_FAILED,
                f"backend '{self.name}' answered {path} with a non-object",
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
                ErrorKind.UPSTREAM_FAILED,
                f"backend '{self.name}' sent a {what} that is not JSON: {data[:200]!r}",
                backend=self.name,
            ) from None
        return obj if isinstance(obj, dict) else None

    def ended_early(self, what: str) -> GatewayError:
        return GatewayError(
            ErrorKind.UPSTREAM_FAILED,
            f"backend '{self.name}' ended {what} before it was done",
            backend=self.name,
        )

    @abstractmethod
    def status_error(
        self, status: int, body: object, retry_after: float | None = None
    ) -> GatewayError:
        """Turn a non-200 answer into the error the caller should see (see
        backends/errors.py: `upstream_error`)."""

    def error_for(self, resp: Response, body: object) -> GatewayError:
        """`status_error`, with the backend's Retry-After (the router honours it)."""
        ra = resp.header("retry-after")
        return self.status_error(
            resp.status, body, parse_retry_after(ra) if ra is not None else None
        )

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
