"""`aistack usage --by key|model|backend|day --since 7d [--json]`: what was used, and its cost.

PARTIAL counts the answers that ended before their last chunk (the client went away,
the backend broke, the server's shutdown cut them): their tokens are what was streamed
until then, estimated, and are in the sums like any other.

Reads the database directly: rows a running gateway has not flushed yet (at most
`ledger.flush_interval` seconds' worth) are not in it.
"""

from __future__ import annotations

import argparse
import sys

import orjson

from aistack.access.keys import SpecError, parse_since
from aistack.cli.db import run_store_command
from aistack.cli.keys import print_table
from aistack.store import Store
from aistack.store.calendar import iso
from aistack.store.records import GROUPS


def usage(args: argparse.Namespace) -> int:
    by = [b.strip() for b in args.by.split(",") if b.strip()]
    bad = [b for b in by if b not in GROUPS]
    if bad:
        print(f"aistack: --by {bad[0]!r}: choose from {', '.join(GROUPS)}", file=sys.stderr)
        return 2
    try:
        args.since_ms = parse_since(args.since)
    except SpecError as e:
        print(f"aistack: --{e}", file=sys.stderr)
        return 2
    args.by_list = by
    return run_store_command(args, _report)


def _report(store: Store, args: argparse.Namespace) -> int:
    rep = store.report(args.by_list, args.since_ms)
    if args.json:
        print(orjson.dumps(rep.as_dict()).decode())
        return 0
    groups = list(rep.by) + (["app"] if "key" in rep.by else [])
    head = (
        *(g.upper() for g in groups),
        *("REQUESTS", "ERRORS", "PARTIAL", "TOKENS IN", "TOKENS OUT", "COST USD", "COST UNKNOWN"),
        "AVG MS",
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
                *(str(r.requests), str(r.errors), str(r.partial)),
                *(str(r.tokens_in), str(r.tokens_out)),
                *(f"{r.cost:.6f}", str(r.cost_unknown), f"{d['avg_duration_ms']:.0f}"),
            )
        )
    rolled = " (older days from daily sums)" if rep.rolled_up else ""
    print(f"usage since {iso(args.since_ms)}{rolled}")
    print_table(rows, right=set(range(len(groups), len(head))))
    if rep.total.partial:
        print(
            f"{rep.total.partial} partial: answers that ended before their last chunk "
            "(client gone, backend broke, server cut), booked with the tokens streamed "
            "until then (estimated)"
        )
    return 0
