"""What a request to a backend is made of: where it goes (`Endpoint`), how long each
phase may take (`Timeouts`), and the ways it can fail (`TransportError` and kin)."""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import urlsplit


class TransportError(Exception):
    """The backend could not be reached or did not answer as HTTP should."""


class ConnectError(TransportError):
    pass


class RemoteProtocolError(TransportError):
    """The connection closed or the bytes were not valid HTTP."""


class TransportTimeout(TransportError):
    phase = "request"


class ConnectTimeout(TransportTimeout):
    phase = "connect"


class FirstByteTimeout(TransportTimeout):
    phase = "first byte"


class IdleTimeout(TransportTimeout):
    phase = "idle"


class TotalTimeout(TransportTimeout):
    phase = "total"


@dataclass(frozen=True, slots=True)
class Timeouts:
    """Seconds; None means no limit. `first_byte` runs until the response headers."""

    connect: float | None = 10.0
    first_byte: float | None = None
    idle: float | None = None
    total: float | None = None


@dataclass(frozen=True, slots=True)
class Endpoint:
    """A parsed base URL: where to connect, and the path prefix requests go under."""

    scheme: str
    host: str
    port: int
    path: str  # without a trailing slash
    host_header: bytes
    key: tuple[str, str, int] = ("", "", 0)  # the connection pool's key

    def __post_init__(self) -> None:
        object.__setattr__(self, "key", (self.scheme, self.host, self.port))

    @property
    def url(self) -> str:
        return f"{self.scheme}://{self.host_header.decode()}{self.path}"


def parse_url(url: str) -> Endpoint:
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https"):
        raise ValueError(f"unsupported URL scheme {parts.scheme!r} in {url!r}")
    if not parts.hostname:
        raise ValueError(f"no host in URL {url!r}")
    default = 443 if parts.scheme == "https" else 80
    port = parts.port or default
    host_header = parts.hostname if port == default else f"{parts.hostname}:{port}"
    if ":" in parts.hostname:  # IPv6 literal
        host_header = f"[{parts.hostname}]" + ("" if port == default else f":{port}")
    return Endpoint(
        scheme=parts.scheme,
        host=parts.hostname,
        port=port,
        path=parts.path.rstrip("/"),
        host_header=host_header.encode(),
    )
