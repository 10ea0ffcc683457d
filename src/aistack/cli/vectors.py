"""`aistack vectors list|stats|snapshot|restore|grant`: the vector store, per app.

These ask the running gateway (its admin API, with the master key from
$AISTACK_MASTER_KEY or the config), since the embedded engine's shards belong to the
process that has them open. When no gateway answers and the engine is `embedded`,
they open the store directly instead (nothing else has it open then). `grant` writes
the grant in the gateway's database, as `aistack keys` writes keys.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

import orjson

from aistack.cli._common import config_arg, load_config, table
from aistack.config import ConfigError
from aistack.store import StoreError
from aistack.vectors.client import ask


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    v = sub.add_parser("vectors", help="the vector store: collections per app, snapshots")
    vsub = v.add_subparsers(dest="vectors_command", metavar="ACTION", required=True)

    def common(p: argparse.ArgumentParser) -> None:
        config_arg(p)
        p.add_argument("--gateway", metavar="URL", help="the gateway (default: from the config)")
        p.add_argument("--json", action="store_true", help="print JSON")

    ls = vsub.add_parser("list", help="collections per app: points, disk, last write")
    common(ls)
    ls.add_argument("--app", help="only this app's collections")
    st = vsub.add_parser("stats", help="totals per app")
    common(st)
    sn = vsub.add_parser("snapshot", help="snapshot one collection, or every one (and prune)")
    common(sn)
    sn.add_argument("collection", nargs="?", help="physical name (default: every collection)")
    sn.add_argument("--dir", help="where (default: vectors.backup.dir)")
    rs = vsub.add_parser("restore", help="restore a snapshot into a new or existing collection")
    common(rs)
    rs.add_argument("snapshot", help="the snapshot file")
    rs.add_argument("collection", help="physical name to restore into (APP__NAME for an app's)")
    gr = vsub.add_parser("grant", help="let an app read a collection (--revoke: no longer)")
    common(gr)
    gr.add_argument("collection", help="physical name")
    gr.add_argument("app", help="the app (key name) to share it with")
    gr.add_argument("--revoke", action="store_true")
    v.set_defaults(func=run)


def _size(n: int | None) -> str:
    if n is None:
        return "-"
    for unit in ("B", "kB", "MB", "GB"):
        if n < 1000 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000  # type: ignore[assignment]
    return str(n)


def _ago(t: float | None) -> str:
    if not t:
        return "never"
    return time.strftime("%Y-%m-%d %H:%M:%SZ", time.gmtime(t))


def _grant(args: argparse.Namespace) -> dict[str, list[str]]:
    """In the store, as keys are: every gateway sharing it notices within a second."""
    from aistack.cli.db import open_configured_store
    from aistack.vectors.tenancy import namespace_of

    store = open_configured_store(args.config)
    try:
        store.set_vector_grant(args.collection, namespace_of(args.app), not args.revoke)
        return store.vector_grants()
    finally:
        store.close()


def run(args: argparse.Namespace) -> int:
    loaded = load_config(args)
    if loaded is None:
        return 2
    cmd = args.vectors_command
    try:
        if cmd == "grant":
            out: Any = {"grants": _grant(args)}
        elif cmd in ("list", "stats"):
            out = ask(loaded, args.gateway, "/admin/api/vectors")
        elif cmd == "snapshot":
            out = ask(
                loaded,
                args.gateway,
                "/admin/api/vectors/snapshot",
                {"collection": args.collection, "dir": args.dir},
            )
        else:
            snap = str(Path(args.snapshot).expanduser().resolve())
            out = ask(
                loaded,
                args.gateway,
                "/admin/api/vectors/restore",
                {"snapshot": snap, "collection": args.collection},
            )
    except (RuntimeError, OSError, ConfigError, StoreError) as e:
        print(f"aistack: {e}", file=sys.stderr)
        return 1
    if args.json:
        print(orjson.dumps(out).decode())
        return 0
    if cmd == "list":
        cols = [c for c in out["collections"] if not args.app or c["app"] == args.app]
        rows = [
            [c["app"] or "-", c["collection"], str(c["points"]), _size(c["disk_bytes"]),
             _ago(c["last_write"]), ",".join(c.get("shared_with") or []) or "-"]
            for c in cols
        ]  # fmt: skip
        print(table(["APP", "COLLECTION", "POINTS", "DISK", "LAST WRITE", "SHARED WITH"], rows))
    elif cmd == "stats":
        per: dict[str, list[Any]] = {}
        for c in out["collections"]:
            s = per.setdefault(c["app"] or "-", [0, 0, 0, None])
            s[0] += 1
            s[1] += c["points"]
            s[2] += c["disk_bytes"] or 0
            s[3] = max(s[3] or 0, c["last_write"] or 0) or None
        rows = [[a, str(s[0]), str(s[1]), _size(s[2]), _ago(s[3])] for a, s in sorted(per.items())]
        print(f"engine: {out['engine']}")
        print(table(["APP", "COLLECTIONS", "POINTS", "DISK", "LAST WRITE"], rows))
    elif cmd == "snapshot":
        for f in out["snapshots"]:
            print(f"wrote {f}")
        for f in out.get("pruned", []):
            print(f"pruned {f}")
    elif cmd == "restore":
        print(f"restored {out['points']} points into {out['collection']}")
    else:
        for c, apps in out["grants"].items():
            print(f"{c}: {', '.join(apps)}")
    return 0
