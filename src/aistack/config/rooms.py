"""The rooms' sections and the agents' dialects': `vectors:` (the Qdrant-compatible
store), `images:` (the job queue) and `agents:`."""

from __future__ import annotations

from typing import Literal

import msgspec

from aistack.config.base import Strict


class VectorQuota(Strict):
    """What one app's key may hold in the vector store; null: no limit."""

    collections: int | None = None
    points: int | None = None
    disk_mb: float | None = None


class VectorBackupConfig(Strict):
    """Scheduled snapshots of every collection, kept grandfather-father-son."""

    dir: str | None = None  # where snapshots go; unset: no scheduled snapshots
    hourly: int = 24  # how many of each tier to keep
    daily: int = 7
    weekly: int = 4


class VectorsConfig(Strict):
    """The Qdrant-compatible vector store (vectors/): served at /qdrant."""

    enabled: bool = True
    # embedded: the Qdrant engine in process (qdrant-edge-py), shards under `path`.
    # qdrant: a Qdrant server or cluster at `url` (api_key from the environment).
    engine: Literal["embedded", "qdrant"] = "embedded"
    # embedded: where the shards live (default: `vectors` in data_dir).
    path: str | None = None
    url: str | None = None
    api_key: str | None = None
    timeout: float = 60.0
    # Also serve the Qdrant API at the root of its own listener (host:port), for apps
    # that take only a URL.
    listen: str | None = None
    # Seconds between flushes of written shards to disk (they flush at shutdown too).
    flush_interval: float = 5.0
    # Build the HNSW index in the background once this many points are not yet in it
    # (0: never), after `optimize_idle` seconds without writes to the collection.
    optimize_threshold: int = 20_000
    optimize_idle: float = 10.0
    # Per app (key name): limits on collections, points and disk; `default` for any
    # key not named. The master key and admins are not limited.
    quotas: dict[str, VectorQuota] = msgspec.field(default_factory=dict)
    # `aistack doctor` warns about collections with more points than this.
    warn_points: int = 1_000_000
    backup: VectorBackupConfig = msgspec.field(default_factory=VectorBackupConfig)


class AgentsConfig(Strict):
    """What the agents' dialects (Anthropic Messages, OpenAI Responses) need."""

    # Seconds a streamed answer may stay silent (a model loading, a long tool call being
    # written) before the stream sends a keep-alive: Anthropic's `ping`, an SSE comment
    # for Responses. A proxy's read timeout (nginx: 60 s) then never cuts it. 0: never.
    keepalive: float = 10.0
    # System blocks that start with one of these are dropped before a request goes to a
    # non-Anthropic backend: Claude Code's first block changes with every request and
    # defeats the backends' prompt caches. An empty list keeps everything.
    strip_system_prefixes: list[str] = msgspec.field(
        default_factory=lambda: ["x-anthropic-billing-header:"]
    )


class ImagesConfig(Strict):
    """The image job queue in front of comfyui backends (docs/images.md)."""

    # Where images are kept. Default: images/ beside the SQLite database (with
    # PostgreSQL: $XDG_DATA_HOME/aistack/images; replicas share one folder, a volume).
    storage: str | None = None
    # Jobs waiting at most; more are refused with 429.
    queue_depth: int = 100
    # How long POST /v1/images/generations waits for its images (the job goes on).
    timeout: float = 600.0
    # A job not finished this long after it was queued fails.
    job_timeout: float = 3600.0
    # Images older than this are deleted; then the oldest, while the total is over
    # max_gb. 0: keep.
    retention_days: float = 30.0
    max_gb: float = 10.0
    # The model for requests that name none (default: the only image model, if one).
    default_model: str | None = None
    # Seconds an idle comfyui backend in a gpu group keeps its models before /free.
    free_after: float = 300.0
    # Seconds a replica's claim on a job lasts without renewal (another takes it over).
    lease: float = 30.0
