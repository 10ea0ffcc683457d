"""`aistack keys create|list|revoke`: virtual keys, straight on the database.

A running gateway takes a new key on its first use (it looks keys it has not loaded up
in the database) and notices a revocation within `auth.watch` seconds (0.5): on every
replica and worker that shares the database.

`create` says so when its key is the first (the gateway then needs a key for every
request), and warns when its allowlist matches no model served now; `revoke` says how
to get back in when no live key is left.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Sequence

import orjson

from aistack.access.gate import KeyInfo, new_record
from aistack.access.keys import SpecError, parse_budget, parse_expiry
from aistack.cli._common import backends_of, find_gateway, http_get
from aistack.cli.db import run_store_command
from aistack.config import Loaded, load
from aistack.core.errors import GatewayError
from aistack.store import KeyRecord, Store
from aistack.store.calendar import iso, now_ms


def keys(args: argparse.Namespace) -> int:
    return run_store_command(args, _COMMANDS[args.keys_command])


def _limits(r: KeyRecord) -> str:
    parts = []
    if r.rpm:
        parts.append(f"rpm {r.rpm}")
    if r.tpm:
        parts.append(f"tpm {r.tpm}")
    if r.concurrent:
        parts.append(f"concurrent {r.concurrent}")
    if r.images_per_minute:
        parts.append(f"images/min {r.images_per_minute}")
    if r.budget is not None:
        parts.append(f"budget ${r.budget:g}/{r.budget_period}")
    return ", ".join(parts) or "-"


def _create(store: Store, args: argparse.Namespace) -> int:
    try:
        budget = parse_budget(args.budget) if args.budget else None
        expires_at = parse_expiry(args.expires) if args.expires else None
        models = [m for part in args.models or [] for m in part.split(",") if m.strip()]
        new, rec = new_record(
            args.name,
            models=models,
            key_scopes=args.scope or [],
            rpm=args.rpm,
            tpm=args.tpm,
            concurrent=args.concurrent,
            budget=budget,
            expires_at=expires_at,
            images_per_minute=args.images_per_minute,
        )
    except (SpecError, ValueError) as e:
        print(f"aistack: {e}", file=sys.stderr)
        return 2
    loaded = load(args.config)
    first = _opens(loaded) and store.key_count() == 0
    store.create_key(rec)
    if args.json:
        print(orjson.dumps({"key": new.key, **rec.public()}).decode())
    else:
        pub = rec.public()
        print(f"Created {rec.id} for {rec.name}. Copy the key now; it is not shown again:\n")
        print(f"    {new.key}\n")
        print(f"models:  {', '.join(rec.models) or 'all'}")
        print(f"scopes:  {', '.join(rec.scopes) or '-'}")
        print(f"limits:  {_limits(rec)}")
        print(f"expires: {pub['expires_at'] or 'never'}")
    if first:
        print(
            "\nThis is the first key, so keys are on now: every request needs one (a "
            "request without a key gets 401; a running gateway notices within a second). "
            "Give each app its own; `aistack admin link` signs you in to the console.",
            file=sys.stderr,
        )
    if rec.models:
        _warn_unserved(loaded, args, rec)
    return 0


def _opens(loaded: Loaded) -> bool:
    """The gateway is open until its first key (no master key, auth.open unset)."""
    a = loaded.config.auth
    return not a.master_key and a.open is None


def _warn_unserved(loaded: Loaded, args: argparse.Namespace, rec: KeyRecord) -> None:
    served = _served(loaded, args)
    if served is None:
        return  # nothing to compare with: no warning rather than a wrong one
    aliases = loaded.config.aliases
    info = KeyInfo(rec)
    if any(info.allows(name, aliases) for name in served):
        return
    shown = ", ".join(sorted(served)[:8]) or "none"
    print(
        f"\nwarning: --models {','.join(rec.models)!r} matches no model served now "
        f"(served: {shown}): this key gets 403 for every model until one is",
        file=sys.stderr,
    )


def _served(loaded: Loaded, args: argparse.Namespace) -> set[str] | None:
    """The names the gateway serves: the running one's list, else the backends' own
    lists, their declared models and the aliases."""
    running = find_gateway(loaded, args)
    if running is not None and running.admin:
        got = http_get(running.url + "/api/tags", running.key, timeout=10.0)
        if got is not None and got[0] == 200:
            return {str(m["name"]) for m in orjson.loads(got[1]).get("models", [])}
    cfg = loaded.config

    async def ask() -> set[str]:
        names = {m for b in cfg.backends for m in b.models} | set(cfg.aliases)
        async with backends_of(loaded) as bs:
            for b in bs:
                try:
                    async with asyncio.timeout(5):
                        names |= {c.name for c in await b.list_models()}
                except (GatewayError, TimeoutError):
                    pass
        return names

    try:
        return asyncio.run(ask())
    except Exception:
        return None


def _list(store: Store, args: argparse.Namespace) -> int:
    now = now_ms()
    records = [r for r in store.list_keys() if args.all or r.revoked_at is None]
    if args.json:
        out = [{**r.public(), "state": r.state(now)} for r in records]
        print(orjson.dumps({"keys": out}).decode())
        return 0
    if not records:
        print("no keys (aistack keys create --name APP)")
        return 0
    rows = [("ID", "NAME", "KEY", "MODELS", "SCOPES", "LIMITS", "STATE", "EXPIRES", "LAST USED")]
    for r in records:
        pub = r.public()
        rows.append(
            (
                r.id, r.name, r.hint, ",".join(r.models) or "all", ",".join(r.scopes) or "-",
                _limits(r), r.state(now), pub["expires_at"] or "never",
                pub["last_used_at"] or "never",
            )
        )  # fmt: skip
    print_table(rows)
    return 0


def _revoke(store: Store, args: argparse.Namespace) -> int:
    done = store.revoke_key(args.key)
    if not done:
        print(f"aistack: no live key with id or name {args.key!r}", file=sys.stderr)
        return 1
    for r in done:
        print(f"revoked {r.id} ({r.name}) at {iso(now_ms())}")
    if not any(r.revoked_at is None for r in store.list_keys()):
        print(
            "No live key is left. Keys stay on once created: requests without one still "
            "get 401. Create one (aistack keys create --name APP), or sign in to the "
            "console with `aistack admin link` and make one there.",
            file=sys.stderr,
        )
    return 0


def print_table(rows: Sequence[Sequence[str]], right: set[int] | None = None) -> None:
    right = right or set()
    widths = [max(len(str(r[i])) for r in rows) for i in range(len(rows[0]))]
    for r in rows:
        cells = [
            str(c).rjust(w) if i in right else str(c).ljust(w)
            for i, (c, w) in enumerate(zip(r, widths, strict=True))
        ]
        print("  ".join(cells).rstrip())


_COMMANDS = {"create": _create, "list": _list, "revoke": _revoke}
