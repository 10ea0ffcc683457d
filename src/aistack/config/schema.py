"""The whole file's schema (`Config`, of every section's), what was loaded (`Loaded`),
and what follows from a config: how many workers, where the gateway is reached, where
its files live."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import msgspec

from aistack.backends.base import BackendConfig
from aistack.config.access import (
    AuthConfig,
    ConsoleConfig,
    LedgerConfig,
    LimitsConfig,
    PriceConfig,
)
from aistack.config.base import Strict
from aistack.config.observability import LoggingConfig, MetricsConfig, TracingConfig
from aistack.config.rooms import AgentsConfig, ImagesConfig, VectorsConfig
from aistack.config.routing import RoutingConfig
from aistack.config.server import ServerConfig


class Config(Strict):
    server: ServerConfig = msgspec.field(default_factory=ServerConfig)
    backends: list[BackendConfig] = msgspec.field(default_factory=list)
    aliases: dict[str, str] = msgspec.field(default_factory=dict)
    # How long a backend's model list is trusted before it is asked again.
    models_ttl: float = 10.0
    routing: RoutingConfig = msgspec.field(default_factory=RoutingConfig)
    auth: AuthConfig = msgspec.field(default_factory=AuthConfig)
    # Where aistack keeps its files: the admin credential, and the SQLite database
    # unless database_url says otherwise. Default: $XDG_DATA_HOME/aistack.
    data_dir: str | None = None
    # Keys and the usage ledger: a SQLite path (default: data_dir/aistack.db) or
    # postgresql://user@host/db.
    database_url: str | None = None
    # redis://host:6379/0: limits shared by every replica. Unset: limits per process.
    redis_url: str | None = None
    limits: LimitsConfig = msgspec.field(default_factory=LimitsConfig)
    ledger: LedgerConfig = msgspec.field(default_factory=LedgerConfig)
    # Model name or glob (as a backend serves it, or backend/model) -> price.
    prices: dict[str, PriceConfig] = msgspec.field(default_factory=dict)
    metrics: MetricsConfig = msgspec.field(default_factory=MetricsConfig)
    tracing: TracingConfig = msgspec.field(default_factory=TracingConfig)
    logging: LoggingConfig = msgspec.field(default_factory=LoggingConfig)
    console: ConsoleConfig = msgspec.field(default_factory=ConsoleConfig)
    vectors: VectorsConfig = msgspec.field(default_factory=VectorsConfig)
    agents: AgentsConfig = msgspec.field(default_factory=AgentsConfig)
    images: ImagesConfig = msgspec.field(default_factory=ImagesConfig)


@dataclass(frozen=True, slots=True)
class Loaded:
    config: Config
    source: str  # the file it came from, or "embedded default"
    # What the config took from elsewhere, for `aistack serve` to say at start.
    notes: tuple[str, ...] = ()

    @property
    def base_dir(self) -> Path | None:
        """Where relative paths in the config start: the config file's folder."""
        return Path(self.source).parent if self.source != "embedded default" else None

    @property
    def data_dir(self) -> Path:
        """Where the admin credential (and the default SQLite database) live."""
        return data_dir_of(self.config, self.base_dir)


def worker_count(cfg: Config) -> tuple[int, str]:
    """How many worker processes serve this config, and why (for the start-up log).

    Set: as set. Unset: one per core, unless an embedded engine holds state one process
    owns: the local model (a copy per worker would multiply its memory and split the
    cores it computes on) or the embedded vector store (its shards on disk)."""
    if cfg.server.workers is not None:
        return cfg.server.workers, "server.workers"
    if any(b.kind == "local" for b in cfg.backends):
        return 1, "the embedded model is configured (set server.workers to change it)"
    if cfg.vectors.enabled and cfg.vectors.engine == "embedded":
        return 1, "the embedded vector store is on (set vectors.engine: qdrant to run more)"
    n = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return max(1, n or 1), "one per core"


def local_url(cfg: Config) -> str:
    """Where this machine reaches the gateway the config describes: its bind address
    (loopback for a wildcard), over plain HTTP. What the CLI asks when it looks for the
    running gateway."""
    host = cfg.server.host
    if host in ("", "0.0.0.0", "::", "[::]"):
        host = "127.0.0.1"
    elif ":" in host and not host.startswith("["):
        host = f"[{host}]"
    return f"http://{host}:{cfg.server.port}"


def data_dir_of(cfg: Config, base_dir: Path | None, env: Mapping[str, str] | None = None) -> Path:
    """`data_dir` (relative to the config file's folder), else $XDG_DATA_HOME/aistack
    (~/.local/share/aistack): not the working directory, so `aistack serve` under
    systemd and `aistack keys` from a shell find the same files."""
    if cfg.data_dir:
        p = Path(cfg.data_dir).expanduser()
        return base_dir / p if not p.is_absolute() and base_dir is not None else p
    env = os.environ if env is None else env
    home = Path(env.get("HOME") or "~").expanduser()
    return Path(env.get("XDG_DATA_HOME") or str(home / ".local" / "share")) / "aistack"
