"""The `server:` section (the listener, its limits and timeouts, the workers), and a
worker's place among the workers a supervisor started."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal

import msgspec

from aistack.config.base import Strict


class ServerConfig(Strict):
    host: str = "127.0.0.1"
    port: int = 8434
    # Requests above this size get a 413; images in base64 make chat bodies large.
    max_body_bytes: int = 64 * 1024 * 1024
    # Seconds an idle keep-alive connection stays open. Keep it longer than the idle
    # timeout of a reverse proxy's upstream pool (nginx's keepalive_timeout 60 s,
    # Traefik's idleConnTimeout 90 s), so the proxy, not aistack, closes idle
    # connections and never sends a request on one aistack is closing.
    keepalive_timeout: float = 100.0
    # Seconds a SIGTERM waits for requests in flight; then each is ended by the server
    # (a stream with its dialect's error event, anything unanswered with a 503) and
    # recorded as cut (status 503, error SERVER_CUT). Keep it under the orchestrator's
    # kill timeout (Kubernetes' terminationGracePeriodSeconds, 30 s by default).
    shutdown_grace: float = 10.0
    # Seconds a request's head may take, from its first byte (or from the connect), and
    # its body, from the end of the head: past them, a 408 and the connection closes.
    head_timeout: float = 10.0
    body_timeout: float = 120.0
    # Seconds a client may leave an answer unread (its socket full) before it is cut.
    write_timeout: float = 60.0
    # Open connections, every listener together; past it a 503 with Retry-After.
    # 0: three quarters of the open-file limit (ulimit -n), at most 10,000.
    max_connections: int = 0
    log_level: Literal["debug", "info", "warning", "error"] = "info"
    # Extra origins allowed for browser clients, beyond Ollama's local defaults.
    cors_origins: list[str] = msgspec.field(default_factory=list)
    # The URL apps reach the gateway at (http://aistack.lan:8434): what `aistack
    # snippet` puts in their config. Default: built from host and port.
    public_url: str | None = None
    # Processes serving the port (SO_REUSEPORT, each its own event loop), under one
    # supervisor. Unset: the number of cores, or 1 when an embedded engine (the local
    # model, the embedded vector store) is configured; see docs/performance.md.
    workers: int | None = None


@dataclass(frozen=True, slots=True)
class WorkerRole:
    """This process's place among the workers a supervisor started (cli/workers.py):
    its index, how many there are, and the folder they share (the limits' table, the
    metrics sockets). Read from the environment the supervisor set."""

    index: int
    count: int
    folder: str

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> WorkerRole | None:
        env = os.environ if env is None else env
        raw = env.get("AISTACK_WORKER", "")
        if not raw:
            return None
        index, _, count = raw.partition("/")
        return cls(int(index), int(count), env["AISTACK_WORKER_DIR"])
