"""`aistack`: the command line. Subcommands register here; each lives in its own module."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable

from aistack import __version__

Command = Callable[[argparse.Namespace], int]


def _serve(args: argparse.Namespace) -> int:
    from aistack.cli.serve import serve

    return serve(args)


def _keys(args: argparse.Namespace) -> int:
    from aistack.cli.keys import keys

    return keys(args)


def _usage(args: argparse.Namespace) -> int:
    from aistack.cli.usage import usage

    return usage(args)


def _admin(args: argparse.Namespace) -> int:
    from aistack.cli.admin import admin

    return admin(args)


def _db(args: argparse.Namespace) -> int:
    from aistack.cli.db import db

    return db(args)


def _config_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--config",
        metavar="FILE",
        help="YAML config (default: $AISTACK_CONFIG, ./aistack.yaml, else the embedded default)",
    )


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="aistack",
        description="One endpoint for a self-hosted AI stack: Ollama and OpenAI APIs over "
        "every backend you run.",
    )
    p.add_argument("--version", action="version", version=f"aistack {__version__}")
    sub = p.add_subparsers(dest="command", metavar="COMMAND")

    s = sub.add_parser("serve", help="run the gateway")
    _config_arg(s)
    s.add_argument("--host", help="address to bind (overrides server.host)")
    s.add_argument("--port", type=int, help="port to bind (overrides server.port)")
    s.add_argument(
        "--migrate",
        action="store_true",
        help="upgrade a PostgreSQL schema at startup (SQLite always upgrades itself)",
    )
    s.set_defaults(func=_serve)

    k = sub.add_parser("keys", help="create, list and revoke virtual keys")
    ksub = k.add_subparsers(dest="keys_command", metavar="ACTION", required=True)
    kc = ksub.add_parser("create", help="create a key; it is printed once")
    _config_arg(kc)
    kc.add_argument("--name", required=True, help="the app the key is for (paperless)")
    kc.add_argument(
        "--models",
        action="append",
        metavar="GLOBS",
        help="models it may use, comma-separated globs ('gpt-oss:*,qwen3:8b'); default all",
    )
    kc.add_argument(
        "--scope",
        action="append",
        metavar="SCOPES",
        help="rights beyond the model APIs, comma-separated: models (pull, delete, copy: "
        "Open WebUI's model management), metrics (/metrics, /health's details)",
    )
    kc.add_argument("--rpm", type=int, help="requests per minute")
    kc.add_argument("--tpm", type=int, help="tokens (in + out) per minute")
    kc.add_argument("--concurrent", type=int, help="requests in flight at once")
    kc.add_argument(
        "--images-per-minute", type=int, metavar="N", help="images it may make a minute"
    )
    kc.add_argument("--budget", metavar="USD/PERIOD", help="spend cap: 5/month, 0.5/day, 20/week")
    kc.add_argument("--expires", metavar="WHEN", help="90d, 12h, or a date (2026-12-31)")
    kc.add_argument("--json", action="store_true", help="print JSON (with the key)")
    kl = ksub.add_parser("list", help="list keys with their limits and last use")
    _config_arg(kl)
    kl.add_argument("--all", action="store_true", help="include revoked keys")
    kl.add_argument("--json", action="store_true", help="print JSON")
    kr = ksub.add_parser("revoke", help="revoke a key by id, or every live key with a name")
    _config_arg(kr)
    kr.add_argument("key", metavar="ID_OR_NAME")
    k.set_defaults(func=_keys)

    a = sub.add_parser("admin", help="the admin credential: console sign-in links")
    asub = a.add_subparsers(dest="admin_command", metavar="ACTION", required=True)
    al = asub.add_parser(
        "link",
        help="print a one-time console sign-in link",
        description="A one-time link that signs its opener in to the console as the admin. "
        "Made from the admin credential (the master key, or the admin.key aistack serve "
        "made in the data directory), so only someone who can read it can make one.",
    )
    _config_arg(al)
    al.add_argument(
        "--minutes", type=float, default=15.0, help="how long it stays valid (default 15)"
    )
    al.add_argument(
        "--url",
        metavar="URL",
        help="the gateway's root URL as your browser reaches it "
        "(default: server.public_url, else its bind address)",
    )
    a.set_defaults(func=_admin)

    u = sub.add_parser("usage", help="requests, tokens and cost from the usage ledger")
    _config_arg(u)
    u.add_argument(
        "--by",
        default="key",
        metavar="GROUPS",
        help="group by key, model, backend or day; several with commas (default key)",
    )
    u.add_argument("--since", default="7d", help="a duration (7d, 24h) or a date (default 7d)")
    u.add_argument("--json", action="store_true", help="print JSON")
    u.set_defaults(func=_usage)

    d = sub.add_parser("db", help="the database schema")
    dsub = d.add_subparsers(dest="db_command", metavar="ACTION", required=True)
    du = dsub.add_parser("upgrade", help="apply the migrations the database lacks")
    _config_arg(du)
    du.add_argument(
        "--lock-timeout",
        type=float,
        default=60.0,
        help="seconds to wait for another upgrade to finish (default 60)",
    )
    ds = dsub.add_parser("status", help="the schema version (exit 3 when behind)")
    _config_arg(ds)
    d.set_defaults(func=_db)

    # The fleet and the runbook: each module adds its own subcommands.
    from aistack.cli import doctor, models, snippet, vectors

    for module in (models, doctor, snippet, vectors):
        module.register(sub)
    return p


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    func: Command | None = getattr(args, "func", None)
    if func is None:
        parser.print_help()
        return 2
    return func(args)


if __name__ == "__main__":
    sys.exit(main())
