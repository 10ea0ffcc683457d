"""`aistack usage --by key|model|backend|day --since 7d [--json]`: what was used, and its cost.

Reads the database directly: rows a running gateway has not flushed yet (at most
`ledger.flush_interval` seconds' worth) are not in it.
"""

from __future__ import annotations

import argparse
import sys
import time

import orjson

from aistack.access.keys import SpecError, parse_duration, parse_expiry
from aistack.cli.db import run_store_command
from aistack.cli.keys import print_table
from aistack.store import Store
from aistack.store.base import GROUPS


def usage(args: argparse.Namespace) -> int:
    by = [b.strip() for b in args.by.split(",") if b.strip()]
    bad = [b for b in by if b not in GROUPS]
    if bad:
        print(f"aistack: --by {bad[0]!r}: choose from {', '.join(GROUPS)}", file=sys.stderr)
        return 2
    try:
        since = int((time.time() - parse_duration(args.since)) * 1000)
    except SpecError:
        try:
            since = parse_expiry(args.since)
        except SpecError:
            print(f"aistack: --since {args.since!r}: write 7d, 24h or a date", file=sys.stderr)
            return 2
    args.by_list, args.since_ms = by, since
    return run_store_command(args, _report)


def _report(store: Store, args: argparse.Namespace) -> int:
    rep = store.report(args.by_list, args.since_ms)
    since = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(args.since_ms / 1000))
    if args.json:
        print(
            orjson.dumps(
                {
                    "by": list(rep.by),
                    "since": since,
                    "rolled_up": rep.rolled_up,
                    "rows": [r.as_dict() for r in rep.rows],
                    "total": rep.total.as_dict(),
                }
            ).decode()
        )
        return 0
    groups = list(rep.by) + (["app"] if "key" in rep.by else [])
    head = (
        *(g.upper() for g in groups),
        *("REQUESTS", "ERRORS", "TOKENS IN", "TOKENS OUT", "COST USD", "COST UNKNOWN", "AVG MS"),
    )
    rows: list[tuple[str, ...]] = [head]
    for r in [*rep.rows, rep.total]:
        d = r.as_dict()
        if r.group:
            label = [str(d.get(g, "")) or "-" for g in groups]
        else:
            label = ["total", *[""] * (len(groups) - 1)] if groups else []
        rows.append(
            (
                *label,
                *(str(r.requests), str(r.errors), str(r.tokens_in), str(r.tokens_out)),
                *(f"{r.cost:.6f}", str(r.cost_unknown), f"{d['avg_duration_ms']:.0f}"),
            )
        )
    print(f"usage since {since}" + (" (older days from daily sums)" if rep.rolled_up else ""))
    print_table(rows, right=set(range(len(groups), len(head))))
    return 0
