"""`aistack models sync`: bring every Ollama backend to the models its config declares."""

from __future__ import annotations

import argparse
import sys

import orjson

from aistack.cli._common import (
    backends_of,
    table,
)
from aistack.cli.progress import ProgressPrinter
from aistack.config import Loaded
from aistack.core.fleet import PullProgress
from aistack.fleet import sync

_ACTION_TEXT = {
    "keep": "keep (present)",
    "pull": "PULL (declared, missing)",
    "extra": "extra (not declared; --prune deletes it)",
    "prune": "PRUNE (not declared)",
}


def render_plan(p: sync.Plan) -> str:
    rows = [[s.backend, s.model, _ACTION_TEXT[s.action]] for s in p.steps]
    lines = [table(["BACKEND", "MODEL", "ACTION"], rows) if rows else "nothing to do"]
    for name, why in p.skipped.items():
        lines.append(f"skipped {name}: {why}")
    for name, why in p.problems.items():
        lines.append(f"FAILED {name}: {why}")
    return "\n".join(lines)


class _SyncReporter:
    def __init__(self, quiet: bool) -> None:
        self.quiet = quiet
        self.printer: ProgressPrinter | None = None

    def started(self, step: sync.Step) -> None:
        if self.quiet:
            return
        verb = "pulling" if step.action == "pull" else "deleting"
        print(f"{verb} {step.model} on {step.backend}", flush=True)
        self.printer = ProgressPrinter(prefix="  ")

    def progress(self, step: sync.Step, p: PullProgress) -> None:
        if self.printer is not None:
            self.printer.update(p)

    def retrying(self, step: sync.Step, error: str, delay: float) -> None:
        if self.printer is not None:
            self.printer.close()
            self.printer = ProgressPrinter(prefix="  ")
        if not self.quiet:
            print(f"  failed: {error}; retrying in {delay:g}s (it resumes)", flush=True)

    def finished(self, step: sync.Step) -> None:
        if self.printer is not None:
            self.printer.close()
            self.printer = None
        if not self.quiet:
            print(f"  {'done' if step.ok else 'FAILED: ' + step.error}", flush=True)


async def sync_models(args: argparse.Namespace, loaded: Loaded) -> int:
    cfg = loaded.config
    async with backends_of(loaded) as bs:
        names = {b.name for b in bs}
        unknown = [n for n in args.instance if n not in names]
        if unknown:
            print(f"aistack: no backend named {', '.join(unknown)}", file=sys.stderr)
            return 2
        plan = await sync.plan(
            bs,
            {c.name: c.models for c in cfg.backends},
            prune=args.prune,
            only=args.instance,
        )
        if not args.json:
            print(render_plan(plan), flush=True)
        if args.dry_run:
            if args.json:
                sys.stdout.write(orjson.dumps(plan.to_json()).decode() + "\n")
            else:
                print("dry run: nothing changed")
            return 0 if not plan.problems else 1
        if not args.json and plan.changes:
            print()
        ok = await sync.apply(
            plan,
            {b.name: b for b in bs},
            _SyncReporter(quiet=args.json),
            retries=max(0, args.retries),
            retry_delay=max(0.0, args.retry_delay),
        )
    if args.json:
        sys.stdout.write(orjson.dumps(plan.to_json()).decode() + "\n")
    else:
        failed = [s for s in plan.steps if s.ok is False]
        done = [s for s in plan.changes if s.ok]
        print(
            f"\nsync: {len(done)} done, {len(failed)} failed, "
            f"{len(plan.problems)} backends unreachable"
        )
    return 0 if ok else 1
