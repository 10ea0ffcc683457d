"""`aistack keys create|list|revoke`: virtual keys, straight on the database.

A running gateway picks changes up within `auth.refresh` seconds (5 by default).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

import orjson

from aistack.access.gate import new_record
from aistack.access.keys import SpecError, parse_budget, parse_expiry
from aistack.cli.db import run_store_command
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
            rpm=args.rpm,
            tpm=args.tpm,
            concurrent=args.concurrent,
            budget=budget,
            expires_at=expires_at,
        )
    except (SpecError, ValueError) as e:
        print(f"aistack: {e}", file=sys.stderr)
        return 2
    store.create_key(rec)
    if args.json:
        print(orjson.dumps({"key": new.key, **rec.public()}).decode())
        return 0
    pub = rec.public()
    print(f"Created {rec.id} for {rec.name}. Copy the key now; it is not shown again:\n")
    print(f"    {new.key}\n")
    print(f"models:  {', '.join(rec.models) or 'all'}")
    print(f"limits:  {_limits(rec)}")
    print(f"expires: {pub['expires_at'] or 'never'}")
    return 0


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
    rows = [("ID", "NAME", "KEY", "MODELS", "LIMITS", "STATE", "EXPIRES", "LAST USED")]
    for r in records:
        pub = r.public()
        rows.append(
            (
                r.id, r.name, r.hint, ",".join(r.models) or "all", _limits(r), r.state(now),
                pub["expires_at"] or "never", pub["last_used_at"] or "never",
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
