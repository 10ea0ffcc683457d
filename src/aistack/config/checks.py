"""What a config must be beyond its types: ranges, names, URLs, secrets that are not
placeholders, and references between sections (a deployment's backend, an alias)."""

from __future__ import annotations

import re

import msgspec

from aistack.config.schema import Config
from aistack.core.errors import ConfigError
from aistack.core.models import canonical

# Values from the shipped examples (and their like) that must never guard a real
# gateway: an unedited deploy would have a publicly known admin key.
_PLACEHOLDER = re.compile(r"change.?me|replace.?me|placeholder|your.?(master.?)?key|example", re.I)


def check(cfg: Config, where: str, master_key: str = "auth.master_key") -> None:
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
