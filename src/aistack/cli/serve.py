"""`aistack serve`: load the config, build the gateway, serve it (aistack.http.server)."""

from __future__ import annotations

import argparse
import ipaddress
import logging
import sys
from typing import TYPE_CHECKING

import msgspec

from aistack import __version__
from aistack.config import Config, ConfigError, Loaded, WorkerRole, load, local_url, worker_count

if TYPE_CHECKING:
    from aistack.access.credential import Credential
    from aistack.access.gate import Gate


def _tune_gc() -> None:
    """Fewer, cheaper collections on the request path.

    Every request allocates a few hundred short-lived objects; with the default
    thresholds the collector runs every few requests and, now and then, walks every
    object the process has (imported modules included). Freezing what start-up made
    takes those out of every later walk, and a higher first threshold makes the young
    collections rarer. Memory stays flat: requests' objects die young either way.
    """
    import gc

    gc.collect()
    gc.freeze()
    gc.set_threshold(20_000, 50, 100)
    # The store's writer thread (and the embedded engine's) take the GIL in turns with
    # the event loop; at the default 5 ms switch interval a request could wait that long
    # behind a ledger batch. 1 ms keeps the loop's tail short.
    sys.setswitchinterval(0.001)


def _setup_logging(level: str, fmt: str) -> None:
    handler = logging.StreamHandler(sys.stderr)
    if fmt == "json" or (fmt == "auto" and not sys.stderr.isatty()):
        from aistack.observability.logs import JsonFormatter

        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(getattr(logging, level.upper(), logging.INFO))


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False  # a name or a wildcard: reachable from elsewhere


def refuse_open_bind(cfg: Config) -> str | None:
    """Why serving this config on this address is refused, or None."""
    host, port = cfg.server.host, cfg.server.port
    if is_loopback(host) or cfg.auth.master_key or cfg.auth.open is not None:
        return None
    return (
        f"refusing to serve on {host}:{port} without auth.master_key: anyone who can reach "
        "it could use every model and the admin API. Set auth.master_key (for example "
        "master_key: ${AISTACK_MASTER_KEY}), or choose explicitly with auth.open: true "
        "(serve without keys) or auth.open: false (virtual keys only)"
    )


def build_gate(
    loaded: Loaded,
    migrate: bool = False,
    admin_key: Credential | None = None,
    role: WorkerRole | None = None,
) -> Gate:
    """Keys, limits and the ledger for this config (nothing connects until started).
    `admin_key`: the data directory's generated credential (see admin_credential);
    `role`: this process's place among several workers (their limits are shared)."""
    from aistack.access.gate import Gate
    from aistack.access.pricing import Price, Prices
    from aistack.limits.base import Limiter
    from aistack.limits.memory import MemoryLimiter
    from aistack.store import open_store

    cfg = loaded.config
    store = open_store(cfg.database_url, loaded.base_dir, loaded.data_dir)
    limiter: Limiter
    if cfg.redis_url:
        from aistack.limits.redis import RedisLimiter

        limiter = RedisLimiter(
            cfg.redis_url,
            prefix=cfg.limits.redis_prefix,
            on_error=cfg.limits.on_redis_error,
            lease=cfg.limits.lease,
        )
    elif role is not None:
        from pathlib import Path

        from aistack.limits.shared import SharedLimiter

        limiter = SharedLimiter(Path(role.folder) / "limits", role.index, role.count)
    else:
        limiter = MemoryLimiter()
    prices = Prices(
        {k: Price(v.input, v.output, v.image, v.second) for k, v in cfg.prices.items()},
        {b.name: b.billed_as for b in cfg.backends},
    )
    a = cfg.auth
    return Gate(
        store,
        limiter,
        prices,
        master_key=a.master_key,
        admin_key=admin_key,
        open_mode=a.open,
        trusted_proxies=a.trusted_proxies,
        admin_groups=a.admin_groups,
        viewer_groups=a.viewer_groups,
        refresh=a.refresh,
        watch=a.watch,
        session_hours=cfg.console.session_hours,
        ledger=msgspec.structs.asdict(cfg.ledger),
        # SQLite upgrades itself; PostgreSQL is shared, so only when asked (`--migrate`
        # here, or `aistack db upgrade` from one place).
        migrate=migrate or store.kind == "sqlite",
    )


def admin_credential(loaded: Loaded, log: logging.Logger, quiet: bool = False) -> Credential | None:
    """The generated admin credential, made on first start when no master key is
    configured; said at start with a one-time console sign-in link."""
    from aistack.access import credential

    cfg = loaded.config
    if cfg.auth.master_key:
        log.info("admin: the master key (auth.master_key); `aistack admin link` makes "
                 "one-time console sign-in links from it")  # fmt: skip
        return None
    try:
        cred, made = credential.ensure(loaded.data_dir)
    except credential.CredentialError as e:
        log.warning(
            "%s: no admin credential, so the admin API and the console take only forward "
            "auth; set auth.master_key (or AISTACK_MASTER_KEY), or make %s writable",
            e,
            loaded.data_dir,
        )
        return None
    if quiet:  # a worker: its supervisor said it
        return cred
    log.warning(
        "admin credential %s %s (mode 0600): whoever can read it is this gateway's admin "
        "(Authorization: Bearer $(cat %s))",
        cred.source,
        "made now" if made else "in use",
        cred.source,
    )
    base = cfg.server.public_url or local_url(cfg)
    log.warning(
        "console: sign in at %s (once, within %d minutes; `aistack admin link` prints another)",
        credential.link_url(base, cred),
        credential.LINK_TTL // 60,
    )
    return cred


def serve(args: argparse.Namespace) -> int:
    try:
        loaded = load(args.config)
    except ConfigError as e:
        print(f"aistack: config error: {e}", file=sys.stderr)
        return 2
    cfg = loaded.config
    server = cfg.server
    if args.host or args.port:
        server = msgspec.structs.replace(
            server, host=args.host or server.host, port=args.port or server.port
        )
        cfg = msgspec.structs.replace(cfg, server=server)
    _setup_logging(server.log_level, cfg.logging.format)
    log = logging.getLogger("aistack")
    refusal = refuse_open_bind(cfg)
    if refusal:
        print(f"aistack: {refusal}", file=sys.stderr)
        return 2
    loaded = Loaded(cfg, loaded.source, loaded.notes)
    role = WorkerRole.from_env()
    if role is None:
        count, why = worker_count(cfg)
        if count > 1:
            from aistack.cli.workers import Supervisor

            log.info("aistack %s: %d workers (%s)", __version__, count, why)
            admin_credential(loaded, log)  # made once, here, before the workers read it
            return Supervisor(sys.argv[1:], count, shared_limits=not cfg.redis_url).run()

    import asyncio

    import uvloop

    from aistack.backends.registry import build
    from aistack.backends.transport import HttpClient
    from aistack.http.server import Limits, Server
    from aistack.observability import Observability
    from aistack.rooms import build as build_app
    from aistack.service import Gateway

    client = HttpClient()
    try:
        backends = build(cfg.backends, client)
    except ConfigError as e:
        print(f"aistack: config error: {loaded.source}: {e}", file=sys.stderr)
        return 2
    log.info("aistack %s; config: %s", __version__, loaded.source)
    for note in loaded.notes:
        log.warning("config: %s", note)
    admin_key = admin_credential(loaded, log, quiet=role is not None)
    try:
        gate = build_gate(
            loaded, migrate=getattr(args, "migrate", False), admin_key=admin_key, role=role
        )
    except Exception as e:  # a database URL the store cannot use
        print(f"aistack: config error: {loaded.source}: database_url: {e}", file=sys.stderr)
        return 2
    gateway = Gateway(cfg, backends, client, gate)
    obs = Observability(cfg, gateway, role=role)
    if obs.tracer is not None:
        log.info("tracing to %s", obs.tracer.settings.endpoint)
    base = f"http://{server.host}:{server.port}"
    for b in backends:
        log.info("backend %s", " ".join(f"{k}={v}" for k, v in b.describe().items()))
    if not backends:
        log.warning("no backends configured: every model request will answer 404")
    log.info("Ollama API at %s/api, OpenAI API at %s/v1", base, base)
    # Our own HTTP/1.1 server, not an ASGI one: see aistack/http/server.py and
    # docs/performance.md. Forwarded headers are read where they matter (trusted
    # proxies), not per request: the TCP peer stays the peer, since forward-auth headers
    # are trusted by it. One JSON request line comes from observability/logs.py.
    main_app, listeners = build_app(gateway, obs, loaded.base_dir)
    srv = Server(
        main_app,
        server.host,
        server.port,
        keepalive=server.keepalive_timeout,
        graceful=server.shutdown_grace,
        extra=listeners,
        worker=role.index if role is not None else None,
        limits=Limits(
            head_timeout=server.head_timeout,
            body_timeout=server.body_timeout,
            write_timeout=server.write_timeout,
            max_connections=server.max_connections,
        ),
    )
    _tune_gc()
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        return runner.run(srv.serve())
