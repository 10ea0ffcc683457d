"""The configuration file: YAML, `${ENV}` interpolation for secrets, strict keys.

Each part's schema is its own: a backend entry is validated by its kind's (declared
with the kind in backends/, listed in backends/registry.py), the rest here.

Where it comes from, in order: `--config FILE`, `$AISTACK_CONFIG`, `./aistack.yaml`,
else the embedded default (the local model, nothing else). A mistake stops startup with
one line naming the file, the key and the problem; unknown keys are mistakes too (a
typo in a config must not silently do nothing).

Two things a file leaves out come from elsewhere, and `Loaded.notes` says so at start:
a file without a `backends:` key keeps the embedded default's local model (`backends:
[]` means none), and `auth.master_key` unset is read from `$AISTACK_MASTER_KEY`.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, get_args, get_origin, get_type_hints

import msgspec
import yaml

from aistack.backends.base import BackendConfig
from aistack.backends.registry import KINDS
from aistack.core.errors import ConfigError as ConfigError  # where callers find it
from aistack.core.models import canonical


class _Strict(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    pass


class ServerConfig(_Strict):
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


Strategy = Literal["least-in-flight", "latency", "weighted", "priority"]


class DeploymentConfig(_Strict):
    """One backend's deployment of one model; unset keys come from the backend."""

    weight: float | None = None
    priority: int | None = None
    max_in_flight: int | None = None


class ModelDefaults(_Strict):
    """Request fields the gateway sets for a model when the client did not (docs/routing.md)."""

    keep_alive: float | str | None = None
    think: bool | Literal["low", "medium", "high", "max"] | None = None
    # A system message for requests without one; with `force`, put before the client's.
    system: str | None = None
    num_ctx: int | None = None
    max_tokens: int | None = None
    temperature: float | None = None
    top_p: float | None = None
    top_k: int | None = None
    min_p: float | None = None
    seed: int | None = None
    stop: list[str] | None = None
    presence_penalty: float | None = None
    frequency_penalty: float | None = None
    repeat_penalty: float | None = None
    # Other backend options (Ollama's num_batch, num_gpu, ...), passed through.
    options: dict[str, Any] = msgspec.field(default_factory=dict)


class ModelRoutingConfig(_Strict):
    """How one public name (a model or an alias) is routed."""

    strategy: Strategy | None = None
    # Tried in order when every deployment of the model failed or is unavailable.
    fallbacks: list[str] = msgspec.field(default_factory=list)
    # Tried in order when the prompt is longer than the model's context.
    context_fallbacks: list[str] = msgspec.field(default_factory=list)
    # Per backend: weight, priority, max_in_flight of this model there.
    deployments: dict[str, DeploymentConfig] = msgspec.field(default_factory=dict)
    # Waiting when every deployment is busy: how many requests may wait, and how long
    # each waits at most (unset: routing.queue_depth, routing.queue_timeout).
    queue_depth: int | None = None
    queue_timeout: float | None = None
    # Send the turns of one conversation to the same instance while it can take them
    # (its prompt cache is reused): by the X-Aistack-Session header, else a hash of the
    # key and the conversation's first messages.
    sticky: bool = False
    # Request fields filled in when the client left them out; `force`: always.
    defaults: ModelDefaults | None = None
    force: bool = False


class CooldownConfig(_Strict):
    # Consecutive failures (unreachable, timeout, 5xx) that take a deployment out.
    failures: int = 3
    # How long it stays out before one trial request (half-open); doubles while the
    # trials fail, up to max_seconds. A 429 takes it out for its Retry-After instead.
    seconds: float = 10.0
    max_seconds: float = 300.0


class HealthConfig(_Strict):
    # Seconds between background probes of each backend (0: no probes). A backend that
    # is down is probed every min(interval, 5) seconds so it comes back quickly.
    interval: float = 30.0
    timeout: float = 5.0


class RoutingConfig(_Strict):
    strategy: Strategy = "least-in-flight"
    # Extra attempts per chain entry after a failure before the first byte.
    retries: int = 2
    # Jittered exponential backoff before trying the same deployment again (seconds).
    backoff: float = 0.25
    backoff_max: float = 2.0
    # Waiting when every deployment that could answer is busy (at its max_in_flight,
    # answering 429/503, or its GPU taken by another model): how long a request waits at
    # most before a 503, and how many may wait per model (more get a 503 at once).
    queue_timeout: float = 30.0
    queue_depth: int = 100
    # A loaded model keeps its GPU against a switch to another model until it has had no
    # request for this long, or the request for the other model has waited this long
    # (the starvation bound). Only where the GPU's memory is known (vram, or learned).
    switch_after: float = 5.0
    cooldown: CooldownConfig = msgspec.field(default_factory=CooldownConfig)
    health: HealthConfig = msgspec.field(default_factory=HealthConfig)
    models: dict[str, ModelRoutingConfig] = msgspec.field(default_factory=dict)


class AuthConfig(_Strict):
    # Grants every model and the admin API. Unset: $AISTACK_MASTER_KEY, when set. Without
    # either, `aistack serve` creates an admin credential in data_dir (access/credential.py).
    master_key: str | None = None
    # None: open only while there is no master key and no virtual key (and then serve
    # binds only to loopback). true: requests without a key are served. false: never.
    open: bool | None = None
    # Proxies (CIDRs) whose forward-auth headers (X-authentik-username, -groups) count.
    trusted_proxies: list[str] = msgspec.field(default_factory=list)
    # Forward-auth users in any of these groups are admins; empty: any forwarded user.
    admin_groups: list[str] = msgspec.field(default_factory=list)
    # Forward-auth users in any of these groups (and not an admin group) may look but
    # not change: the console and the admin API read-only. Needs admin_groups set.
    viewer_groups: list[str] = msgspec.field(default_factory=list)
    # Seconds between reloads of keys and budget spend from the database.
    refresh: float = 5.0
    # Seconds between looks at the database's change stamp: a key created or revoked, or
    # a console sign-out, anywhere (another replica, a worker, the CLI) counts here
    # within this time. One indexed row read per look.
    watch: float = 0.5
    # /health answers its details (each backend's URL, state, last error) to anyone.
    # false: only to an admin or a key with scope `metrics`; others get the summary.
    public_health: bool = False


class LimitsConfig(_Strict):
    # When Redis cannot be reached: "local" limits per replica, or "reject" with 503.
    on_redis_error: Literal["local", "reject"] = "local"
    redis_prefix: str = "aistack:"
    # Seconds a concurrency slot is held at most if its replica dies mid-request.
    lease: float = 900.0


class LedgerConfig(_Strict):
    enabled: bool = True
    # Seconds between writes; what a SIGKILL can lose at most.
    flush_interval: float = 1.0
    batch_size: int = 500
    # Rows waiting beyond this are dropped (and counted) rather than slowing requests.
    queue_size: int = 100_000
    # Days raw rows are kept; daily sums are kept for ever. 0 keeps raw rows for ever.
    retention_days: int = 30


class PriceConfig(_Strict):
    """USD per million tokens; for image models, per image and per second of GPU time."""

    input: float = 0.0
    output: float = 0.0
    image: float = 0.0
    second: float = 0.0


class MetricsConfig(_Strict):
    enabled: bool = True
    # true: /metrics needs an admin or a key with scope `metrics` (a Prometheus bearer
    # token). false: anyone who can reach the gateway reads it.
    auth: bool = True
    # Seconds between polls of each backend's loaded models (Ollama /api/ps); 0: never.
    ps_interval: float = 30.0


class LangfuseConfig(_Strict):
    host: str
    public_key: str
    secret_key: str


class TracingConfig(_Strict):
    # Where spans go comes from the standard OTEL_* variables, or from `langfuse`.
    enabled: bool = True
    # Put prompts and answers on spans (gen_ai.input/output.messages). Off: they can
    # hold anything a user typed.
    capture_content: bool = False
    langfuse: LangfuseConfig | None = None


class LoggingConfig(_Strict):
    # One line per request (never a key, never prompt text).
    requests: bool = True
    # json for collectors, text for a terminal, auto: text when stderr is a terminal.
    format: Literal["auto", "json", "text"] = "auto"


class ConsoleConfig(_Strict):
    """The web console at /ui (console/)."""

    enabled: bool = True
    # How long a sign-in lasts. Sessions live in the database (every replica shares
    # them, and a sign-out holds on all of them).
    session_hours: float = 12.0


class VectorQuota(_Strict):
    """What one app's key may hold in the vector store; null: no limit."""

    collections: int | None = None
    points: int | None = None
    disk_mb: float | None = None


class VectorBackupConfig(_Strict):
    """Scheduled snapshots of every collection, kept grandfather-father-son."""

    dir: str | None = None  # where snapshots go; unset: no scheduled snapshots
    hourly: int = 24  # how many of each tier to keep
    daily: int = 7
    weekly: int = 4


class VectorsConfig(_Strict):
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


class AgentsConfig(_Strict):
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


class ImagesConfig(_Strict):
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


class Config(_Strict):
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


EMBEDDED_DEFAULT = """\
server: {host: 127.0.0.1, port: 8434}
backends:
  - name: local
    kind: local
"""
# What a file without a `backends:` key serves: the embedded default's.
_DEFAULT_BACKENDS: list[dict[str, Any]] = [{"name": "local", "kind": "local"}]

# Values from the shipped examples (and their like) that must never guard a real
# gateway: an unedited deploy would have a publicly known admin key.
_PLACEHOLDER = re.compile(r"change.?me|replace.?me|placeholder|your.?(master.?)?key|example", re.I)

_VAR = re.compile(r"\$\$|\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")


def _interpolate(node: Any, path: str, env: Mapping[str, str], where: str) -> Any:
    if isinstance(node, str):

        def sub(m: re.Match[str]) -> str:
            if m.group(0) == "$$":
                return "$"
            name, default = m.group(1), m.group(2)
            if name in env:
                return env[name]
            if default is not None:
                return default
            raise ConfigError(f"{where}: {path}: environment variable {name} is not set")

        return _VAR.sub(sub, node)
    if isinstance(node, list):
        return [_interpolate(v, f"{path}[{i}]", env, where) for i, v in enumerate(node)]
    if isinstance(node, dict):
        return {
            k: _interpolate(v, f"{path}.{k}" if path else str(k), env, where)
            for k, v in node.items()
        }
    return node


_AT = re.compile(r"^(.*?)(?: - at `\$(.*)`)?$", re.S)


def _msgspec_problem(e: msgspec.ValidationError) -> tuple[str, str]:
    m = _AT.match(str(e))
    assert m is not None
    problem, at = m.group(1), (m.group(2) or "")
    key = at.lstrip(".") or "(top level)"
    problem = problem.replace("`", "'")
    return key, problem[0].lower() + problem[1:] if problem else problem


def _pinpoint(raw: Any, typ: Any, path: str) -> tuple[str, str] | None:
    """Where `raw` fails to convert to `typ`, deepest part first, naming the keys of
    mappings (msgspec writes `[...]` for them: `routing.models[...].strategy`)."""
    if isinstance(raw, dict) and isinstance(typ, type) and issubclass(typ, msgspec.Struct):
        hints = get_type_hints(typ)
        for f in msgspec.structs.fields(typ):
            if f.encode_name in raw:
                sub = f"{path}.{f.name}" if path else f.name
                found = _pinpoint(raw[f.encode_name], hints[f.name], sub)
                if found is not None:
                    return found
    elif isinstance(raw, dict) and get_origin(typ) is dict:
        for k, v in raw.items():
            found = _pinpoint(v, get_args(typ)[1], f"{path}.{k}")
            if found is not None:
                return found
    elif isinstance(raw, list) and get_origin(typ) is list:
        for i, v in enumerate(raw):
            found = _pinpoint(v, get_args(typ)[0], f"{path}[{i}]")
            if found is not None:
                return found
    try:
        msgspec.convert(raw, typ, strict=False)
    except msgspec.ValidationError as e:
        key, problem = _msgspec_problem(e)
        if key == "(top level)":
            return path or key, problem
        return (f"{path}.{key}" if path else key), problem
    return None


def parse(text: str, where: str, env: Mapping[str, str] | None = None) -> Config:
    return parse_noting(text, where, env)[0]


def parse_noting(
    text: str, where: str, env: Mapping[str, str] | None = None
) -> tuple[Config, list[str]]:
    """The config, and what it took from elsewhere (see the module's docstring)."""
    env = os.environ if env is None else env
    notes: list[str] = []
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        loc = f"line {mark.line + 1}" if mark is not None else "(syntax)"
        raise ConfigError(f"{where}: {loc}: invalid YAML: {getattr(e, 'problem', e)}") from None
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise ConfigError(f"{where}: (top level): expected a mapping of settings")
    raw = _interpolate(raw, "", env, where)
    if "backends" not in raw:
        raw["backends"] = [dict(b) for b in _DEFAULT_BACKENDS]
        notes.append(
            f"{where} has no backends: key, so the embedded default's local model is "
            "served (write backends: [] for none)"
        )
    entries = raw.pop("backends", None)
    try:
        cfg = msgspec.convert(raw, Config, strict=False)
    except msgspec.ValidationError as e:
        key, problem = _pinpoint(raw, Config, "") or _msgspec_problem(e)
        raise ConfigError(f"{where}: {key}: {problem}") from None
    cfg.backends = _backends(entries, where)
    if cfg.auth.master_key is None and env.get("AISTACK_MASTER_KEY"):
        cfg.auth = msgspec.structs.replace(cfg.auth, master_key=env["AISTACK_MASTER_KEY"])
        notes.append("auth.master_key is unset: the master key is $AISTACK_MASTER_KEY")
        where_key = "auth.master_key ($AISTACK_MASTER_KEY)"
    else:
        where_key = "auth.master_key"
    _check(cfg, where, where_key)
    return cfg, notes


def _backends(entries: object, where: str) -> list[BackendConfig]:
    """Each `backends:` entry, validated by its kind's schema."""
    if entries is None:
        return []
    if not isinstance(entries, list):
        raise ConfigError(f"{where}: backends: expected a list of backends")
    out = []
    for i, raw in enumerate(entries):
        key = f"backends[{i}]"
        if not isinstance(raw, dict):
            raise ConfigError(f"{where}: {key}: expected a mapping (name, kind, ...)")
        kind = KINDS.get(raw.get("kind"))  # type: ignore[arg-type]
        if kind is None:
            kinds = ", ".join(repr(k) for k in sorted(KINDS))
            raise ConfigError(
                f"{where}: {key}.kind: expected one of {kinds}, got {raw.get('kind')!r}"
            )
        try:
            out.append(msgspec.convert(raw, kind.config, strict=False))
        except msgspec.ValidationError as e:
            sub, problem = _pinpoint(raw, kind.config, key) or _msgspec_problem(e)
            raise ConfigError(f"{where}: {sub}: {problem}") from None
    return out


def _check(cfg: Config, where: str, master_key: str = "auth.master_key") -> None:
    if not (0 < cfg.server.port < 65536):
        raise ConfigError(f"{where}: server.port: must be between 1 and 65535")
    if cfg.server.workers is not None and not 1 <= cfg.server.workers <= 256:
        raise ConfigError(f"{where}: server.workers: must be between 1 and 256 (or unset)")
    if (cfg.server.workers or 1) > 1 and cfg.vectors.enabled and cfg.vectors.engine == "embedded":
        raise ConfigError(
            f"{where}: server.workers: the embedded vector store's shards have one owning "
            "process; with more than one worker set vectors.engine: qdrant (a Qdrant server) "
            "or vectors.enabled: false"
        )
    if not cfg.server.shutdown_grace >= 0:
        raise ConfigError(f"{where}: server.shutdown_grace: must be 0 seconds or more")
    for key in ("keepalive_timeout", "head_timeout", "body_timeout", "write_timeout"):
        if not getattr(cfg.server, key) > 0:
            raise ConfigError(f"{where}: server.{key}: must be more than 0 seconds")
    if cfg.server.max_connections < 0:
        raise ConfigError(f"{where}: server.max_connections: must be 0 (automatic) or more")
    if cfg.server.max_body_bytes < 1:
        raise ConfigError(f"{where}: server.max_body_bytes: must be 1 or more")
    pub = cfg.server.public_url
    if pub is not None:
        if not re.match(r"^https?://[^/\s]+", pub):
            raise ConfigError(f"{where}: server.public_url: {pub!r} is not an http(s) URL")
        if re.search(r"/(v1|api)/?$", pub):
            raise ConfigError(
                f"{where}: server.public_url: give the root URL, without /v1 or /api "
                "(each app gets the form it needs)"
            )
    seen: set[str] = set()
    for i, b in enumerate(cfg.backends):
        key = f"backends[{i}]"
        if not b.name or not re.match(r"^[A-Za-z0-9_.\-]+$", b.name):
            raise ConfigError(
                f"{where}: {key}.name: {b.name!r} must be letters, digits, '.', '-' or '_'"
            )
        if b.name in seen:
            raise ConfigError(f"{where}: {key}.name: duplicate backend name {b.name!r}")
        seen.add(b.name)
        for sub, problem in b.problems():
            raise ConfigError(f"{where}: {key}.{sub}: {problem}")
        for j, m in enumerate(b.models):
            if not m or not isinstance(m, str):
                raise ConfigError(f"{where}: {key}.models[{j}]: must be a model name")
        _check_deployment(where, key, b.weight, b.max_in_flight)
    _check_access(cfg, where, master_key)
    _check_images(cfg, where)
    for alias, target in cfg.aliases.items():
        if not target:
            raise ConfigError(f"{where}: aliases.{alias}: needs a target model")
        if canonical(alias) == canonical(target):
            raise ConfigError(f"{where}: aliases.{alias}: an alias cannot point at itself")
    _check_routing(cfg, where)
    _check_vectors(cfg, where)


def _check_vectors(cfg: Config, where: str) -> None:
    v = cfg.vectors
    if v.engine == "qdrant" and (not v.url or not re.match(r"^https?://[^/\s]+", v.url)):
        raise ConfigError(
            f"{where}: vectors.url: the Qdrant server's http(s):// URL is required "
            "with engine: qdrant"
        )
    if v.listen is not None and not re.match(
        r"^[^\s:]+:\d{1,5}$|^\[[0-9a-fA-F:]+\]:\d{1,5}$", v.listen
    ):
        raise ConfigError(f"{where}: vectors.listen: write HOST:PORT, e.g. 127.0.0.1:6333")
    for name in ("flush_interval", "timeout"):
        if not getattr(v, name) > 0:
            raise ConfigError(f"{where}: vectors.{name}: must be more than 0 seconds")
    if v.optimize_threshold < 0 or v.optimize_idle < 0:
        raise ConfigError(f"{where}: vectors.optimize_threshold: must be at least 0 (0: never)")
    for app, q in v.quotas.items():
        for field in ("collections", "points", "disk_mb"):
            n = getattr(q, field)
            if n is not None and n < 0:
                raise ConfigError(f"{where}: vectors.quotas.{app}.{field}: cannot be negative")
    b = v.backup
    for tier in ("hourly", "daily", "weekly"):
        if getattr(b, tier) < 0:
            raise ConfigError(f"{where}: vectors.backup.{tier}: cannot be negative")


def _check_deployment(where: str, key: str, weight: float | None, cap: int | None) -> None:
    if weight is not None and not weight > 0:
        raise ConfigError(f"{where}: {key}.weight: must be above 0")
    if cap is not None and cap < 1:
        raise ConfigError(f"{where}: {key}.max_in_flight: must be at least 1 (or null)")


# A Go duration, as Ollama reads keep_alive strings: "5m", "1h30m", "-1s", "0".
_DURATION = re.compile(r"^(0|-?(\d+(\.\d+)?(ns|us|µs|ms|s|m|h))+)$")


def _check_routing(cfg: Config, where: str) -> None:
    r = cfg.routing
    if not 0 <= r.retries <= 10:
        raise ConfigError(f"{where}: routing.retries: must be between 0 and 10")
    if r.backoff < 0 or r.backoff_max < r.backoff:
        raise ConfigError(
            f"{where}: routing.backoff: must be at least 0 and at most routing.backoff_max"
        )
    if r.queue_timeout < 0:
        raise ConfigError(f"{where}: routing.queue_timeout: must be at least 0")
    if r.queue_depth < 0:
        raise ConfigError(f"{where}: routing.queue_depth: must be at least 0 (0: no waiting)")
    if r.switch_after < 0:
        raise ConfigError(f"{where}: routing.switch_after: must be at least 0 seconds")
    c = r.cooldown
    if c.failures < 1:
        raise ConfigError(f"{where}: routing.cooldown.failures: must be at least 1")
    if not c.seconds > 0 or c.max_seconds < c.seconds:
        raise ConfigError(
            f"{where}: routing.cooldown.seconds: must be above 0 and at most max_seconds"
        )
    if r.health.interval < 0:
        raise ConfigError(f"{where}: routing.health.interval: must be at least 0 (0: off)")
    if not r.health.timeout > 0:
        raise ConfigError(f"{where}: routing.health.timeout: must be above 0")
    backends = {b.name for b in cfg.backends}
    aliases = {canonical(a) for a in cfg.aliases}
    seen: dict[str, str] = {}
    for name, m in r.models.items():
        key = f"routing.models.{name}"
        if not name:
            raise ConfigError(f"{where}: routing.models: a model name is empty")
        c_name = canonical(name)
        if c_name in seen:
            raise ConfigError(f"{where}: {key}: the same model as routing.models.{seen[c_name]}")
        seen[c_name] = name
        for field in ("fallbacks", "context_fallbacks"):
            for j, f in enumerate(getattr(m, field)):
                if not f:
                    raise ConfigError(f"{where}: {key}.{field}[{j}]: must be a model name")
                if canonical(f) == c_name:
                    raise ConfigError(
                        f"{where}: {key}.{field}[{j}]: a model cannot fall back to itself"
                    )
        if m.deployments and c_name in aliases:
            raise ConfigError(
                f"{where}: {key}.deployments: {name!r} is an alias; set deployments on "
                "the model it names"
            )
        for b, d in m.deployments.items():
            if b not in backends:
                raise ConfigError(f"{where}: {key}.deployments.{b}: no backend named {b!r}")
            _check_deployment(where, f"{key}.deployments.{b}", d.weight, d.max_in_flight)
        if m.queue_depth is not None and m.queue_depth < 0:
            raise ConfigError(f"{where}: {key}.queue_depth: must be at least 0 (0: no waiting)")
        if m.queue_timeout is not None and m.queue_timeout < 0:
            raise ConfigError(f"{where}: {key}.queue_timeout: must be at least 0")
        if m.force and m.defaults is None:
            raise ConfigError(f"{where}: {key}.force: there are no defaults to force")
        md = m.defaults
        if md is not None:
            ka = md.keep_alive
            if isinstance(ka, str) and not _DURATION.match(ka.strip()):
                raise ConfigError(
                    f"{where}: {key}.defaults.keep_alive: {md.keep_alive!r} is not a "
                    "duration (seconds as a number, or like 5m, 24h, -1m)"
                )
            if md.num_ctx is not None and md.num_ctx < 1:
                raise ConfigError(f"{where}: {key}.defaults.num_ctx: must be at least 1")
            if md.max_tokens is not None and md.max_tokens < 1:
                raise ConfigError(f"{where}: {key}.defaults.max_tokens: must be at least 1")


def _check_images(cfg: Config, where: str) -> None:
    im = cfg.images
    for name in ("queue_depth", "timeout", "job_timeout", "lease"):
        if not getattr(im, name) > 0:
            raise ConfigError(f"{where}: images.{name}: must be more than 0")
    for name in ("retention_days", "max_gb", "free_after"):
        if getattr(im, name) < 0:
            raise ConfigError(f"{where}: images.{name}: must be 0 (off) or more")


def placeholder(value: str) -> bool:
    """A value copied from an example (change-me, replace-me, ...), not a secret."""
    return bool(_PLACEHOLDER.search(value))


def _check_access(cfg: Config, where: str, master_key: str = "auth.master_key") -> None:
    import ipaddress

    a = cfg.auth
    if a.master_key is not None:
        if not a.master_key:
            # ${AISTACK_MASTER_KEY:-} left empty means "no master key".
            cfg.auth = a = msgspec.structs.replace(a, master_key=None)
        elif len(a.master_key) < 16:
            raise ConfigError(f"{where}: {master_key}: too short; use 16 characters or more")
        elif placeholder(a.master_key):
            raise ConfigError(
                f"{where}: {master_key}: this is a placeholder from an example, not a secret: "
                "generate one (openssl rand -base64 32)"
            )
    for i, c in enumerate(a.trusted_proxies):
        try:
            ipaddress.ip_network(c, strict=False)
        except ValueError:
            raise ConfigError(
                f"{where}: auth.trusted_proxies[{i}]: {c!r} is not an address or CIDR"
            ) from None
    if a.refresh <= 0:
        raise ConfigError(f"{where}: auth.refresh: must be more than 0 seconds")
    if a.watch <= 0:
        raise ConfigError(f"{where}: auth.watch: must be more than 0 seconds")
    if a.viewer_groups and not a.admin_groups:
        raise ConfigError(
            f"{where}: auth.viewer_groups: set auth.admin_groups too (while it is empty, "
            "every forwarded user is an admin)"
        )
    con = cfg.console
    if con.session_hours <= 0:
        raise ConfigError(f"{where}: console.session_hours: must be more than 0")
    url = cfg.database_url
    password = re.match(r"^[a-z]+://[^:/@]*:([^@]*)@", url or "")
    if password and placeholder(password.group(1)):
        raise ConfigError(
            f"{where}: database_url: its password is a placeholder from an example: set a real one"
        )
    if url and "://" in url and not url.startswith(("sqlite://", "postgresql://", "postgres://")):
        raise ConfigError(
            f"{where}: database_url: use a SQLite path, sqlite:///path or postgresql://..."
        )
    r = cfg.redis_url
    if r and not r.startswith(("redis://", "rediss://", "unix://")):
        raise ConfigError(f"{where}: redis_url: use redis://host:6379/0, rediss:// or unix://")
    led = cfg.ledger
    for name in ("flush_interval", "batch_size", "queue_size"):
        if getattr(led, name) <= 0:
            raise ConfigError(f"{where}: ledger.{name}: must be more than 0")
    if led.retention_days < 0:
        raise ConfigError(f"{where}: ledger.retention_days: must be 0 (keep) or more days")
    if cfg.limits.lease <= 0:
        raise ConfigError(f"{where}: limits.lease: must be more than 0 seconds")
    for name, p in cfg.prices.items():
        if p.input < 0 or p.output < 0 or p.image < 0 or p.second < 0:
            raise ConfigError(f"{where}: prices.{name}: prices cannot be negative")


def find_config(explicit: str | None, env: Mapping[str, str] | None = None) -> Path | None:
    env = os.environ if env is None else env
    if explicit:
        return Path(explicit)
    if env.get("AISTACK_CONFIG"):
        return Path(env["AISTACK_CONFIG"])
    here = Path("aistack.yaml")
    return here if here.is_file() else None


def load(explicit: str | None = None, env: Mapping[str, str] | None = None) -> Loaded:
    path = find_config(explicit, env)
    if path is None:
        cfg, notes = parse_noting(EMBEDDED_DEFAULT, "embedded default", env)
        return Loaded(cfg, "embedded default", tuple(notes))
    try:
        text = path.read_text()
    except OSError as e:
        raise ConfigError(f"{path}: cannot read: {e.strerror or e}") from None
    cfg, notes = parse_noting(text, str(path), env)
    return Loaded(_anchor(cfg, path.parent), str(path), tuple(notes))


def _anchor(cfg: Config, base: Path) -> Config:
    """Relative file paths in the config (workflows, image storage) start at its folder."""

    def at(p: str) -> str:
        q = Path(p).expanduser()
        return str(q if q.is_absolute() else (base / q).resolve())

    for b in cfg.backends:
        for w in getattr(b, "workflows", {}).values():
            w.file = at(w.file)
    if cfg.images.storage:
        cfg.images.storage = at(cfg.images.storage)
    return cfg
