"""`aistack serve`: load the config, build the gateway, run it on uvicorn (uvloop, httptools)."""

from __future__ import annotations

import argparse
import logging
import sys

import msgspec

from aistack import __version__
from aistack.config import ConfigError, load


def _setup_logging(level: str) -> None:
    logging.basicConfig(
        level=getattr(logging, level.upper(), logging.INFO),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )


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
    _setup_logging(server.log_level)
    log = logging.getLogger("aistack")

    import uvicorn

    from aistack.backends.registry import build
    from aistack.backends.transport import HttpClient
    from aistack.http.app import App
    from aistack.service import Gateway

    client = HttpClient()
    try:
        backends = build(cfg.backends, client)
    except ConfigError as e:
        print(f"aistack: config error: {loaded.source}: {e}", file=sys.stderr)
        return 2
    gateway = Gateway(cfg, backends, client)
    base = f"http://{server.host}:{server.port}"
    log.info("aistack %s; config: %s", __version__, loaded.source)
    for b in backends:
        log.info("backend %s", " ".join(f"{k}={v}" for k, v in b.describe().items()))
    if not backends:
        log.warning("no backends configured: every model request will answer 404")
    log.info("Ollama API at %s/api, OpenAI API at %s/v1", base, base)
    config = uvicorn.Config(
        App(gateway),
        host=server.host,
        port=server.port,
        loop="uvloop",
        http="httptools",
        lifespan="on",
        access_log=False,
        log_level=server.log_level,
        server_header=False,
        # Forwarded headers are read where they matter (trusted proxies), not per request.
        proxy_headers=False,
        date_header=False,
        timeout_graceful_shutdown=10,
    )
    uvicorn.Server(config).run()
    return 0
