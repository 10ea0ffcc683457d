"""`aistack models`: the fleet inventory, pull/delete/copy on one instance, and sync.

This module reads the command line; listing.py lists, manage.py pulls, deletes, copies,
loads and unloads, syncing.py brings the backends to what the config declares.

The inventory comes from the running gateway when one answers at the config's address
(or at `--gateway URL`): only it knows what its embedded model has loaded. Otherwise,
and with `--direct`, from the backends themselves; the output says which. Pull, delete,
copy and sync talk to the backends directly, with the config `aistack serve` reads.
"""

from __future__ import annotations

import argparse
import asyncio
import sys

from aistack.cli._common import config_arg, key_arg, load_config
from aistack.cli.models.listing import list_models
from aistack.cli.models.manage import manage, memory
from aistack.cli.models.syncing import sync_models
from aistack.config import ConfigError


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    m = sub.add_parser(
        "models",
        help="the model fleet: list, pull, delete, copy, sync",
        description="Every model on every backend (default), or manage them.",
    )
    config_arg(m)
    m.add_argument("--json", action="store_true", help="print JSON")
    m.add_argument(
        "--gateway",
        metavar="URL",
        help="the running gateway to ask (default: the config's address, when it answers)",
    )
    m.add_argument("--direct", action="store_true", help="ask the backends, even if a gateway runs")
    key_arg(m, "for the gateway")
    m.add_argument(
        "--no-details",
        action="store_true",
        help="skip /api/show per model (faster; no capabilities or context length)",
    )
    m.set_defaults(func=_run)
    msub = m.add_subparsers(dest="models_command", metavar="ACTION")

    p = msub.add_parser("pull", help="pull a model onto an Ollama instance, with progress")
    config_arg(p, nested=True)
    p.add_argument("model")
    p.add_argument("--instance", metavar="BACKEND", help="the backend to pull onto")
    p.add_argument("--insecure", action="store_true", help="allow an insecure registry")

    d = msub.add_parser("delete", help="delete a model from an Ollama instance")
    config_arg(d, nested=True)
    d.add_argument("model")
    d.add_argument("--instance", metavar="BACKEND", help="the backend to delete from")

    c = msub.add_parser("copy", help="copy a model to a new name on an Ollama instance")
    config_arg(c, nested=True)
    c.add_argument("source")
    c.add_argument("destination")
    c.add_argument("--instance", metavar="BACKEND", help="the backend to copy on")

    ld = msub.add_parser(
        "load",
        help="load a model into memory on an Ollama instance (so its first request is warm)",
        description="Loads MODEL on --instance, else where it is loaded already (its "
        "keep-alive renewed), else on the first instance that declares it, else the "
        "first that has it.",
    )
    config_arg(ld, nested=True)
    ld.add_argument("model")
    ld.add_argument("--instance", metavar="BACKEND", help="the backend to load it on")
    ld.add_argument("--keep-alive", metavar="DURATION", help="how long to keep it (5m, 24h, -1)")
    ud = msub.add_parser(
        "unload",
        help="unload a model from memory (every instance that holds it, or --instance)",
        description="These go to the backends directly: a request running through a "
        "gateway is cut short. The console's Unload button (POST /admin/api/models/unload) "
        "goes through the gateway, which never unloads a model serving a request.",
    )
    config_arg(ud, nested=True)
    ud.add_argument("model")
    ud.add_argument("--instance", metavar="BACKEND", help="the backend to unload it from")

    s = msub.add_parser(
        "sync",
        help="bring every Ollama backend to the models its config declares",
        description="Plan, then pull what is missing and report (or prune) extras. "
        "A failed pull is retried and resumes where it stopped; exit 1 if anything failed.",
    )
    config_arg(s, nested=True)
    s.add_argument("--dry-run", action="store_true", help="show the plan, change nothing")
    s.add_argument("--prune", action="store_true", help="delete models nobody declared")
    s.add_argument(
        "--instance",
        action="append",
        default=[],
        metavar="BACKEND",
        help="only this backend (repeatable)",
    )
    s.add_argument("--json", action="store_true", help="print the plan and results as JSON")
    s.add_argument("--retries", type=int, default=2, help="retries per failed pull (2)")
    s.add_argument(
        "--retry-delay", type=float, default=2.0, help="seconds before the first retry (2)"
    )


def _run(args: argparse.Namespace) -> int:
    loaded = load_config(args)
    if loaded is None:
        return 2
    cmd = args.models_command or "list"
    try:
        if cmd == "list":
            return list_models(args, loaded)
        if cmd == "sync":
            return asyncio.run(sync_models(args, loaded))
        if cmd in ("load", "unload"):
            return asyncio.run(memory(args, loaded))
        return asyncio.run(manage(args, loaded))
    except ConfigError as e:
        print(f"aistack: config error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(
            "\naistack: interrupted; run the same command again to resume "
            "(Ollama keeps what it has downloaded)",
            file=sys.stderr,
        )
        return 130
