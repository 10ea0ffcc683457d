"""What the HTTP server (http/server.py) lets a connection take: the configured limits
(`server.*`, docs/configuration.md) and the fixed ones."""

from __future__ import annotations

import resource
from dataclasses import dataclass

MAX_HEAD = 64 * 1024  # bytes of request line and headers
LINGER = 2.0  # seconds a refused connection drops the rest of what the client sends
MAX_PIPELINE = 16  # requests queued behind the one being answered before reading pauses
CUT_WAIT = 2.0  # seconds requests cut at the end of the shutdown grace get to end
MAX_PIPELINE_BYTES = 1024 * 1024  # body bytes queued behind it before reading pauses
TICK = 1.0  # seconds between two checks of every connection's deadlines


@dataclass(frozen=True, slots=True)
class Limits:
    """What a connection may take (config: `server.*`, docs/configuration.md)."""

    head_timeout: float = 10.0  # seconds from a head's first byte (or the connect) to its end
    body_timeout: float = 120.0  # seconds from the end of a head to the end of its body
    write_timeout: float = 60.0  # seconds a client may leave an answer unread
    max_connections: int = 0  # open connections, all listeners; 0: from the open-file limit


def default_max_connections() -> int:
    """Three quarters of the open-file limit (at most 10,000): the rest stays for
    backends, the store, logs and the 503s themselves."""
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY or soft <= 0:
        return 10_000
    return max(16, min(10_000, soft * 3 // 4))
