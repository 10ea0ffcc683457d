"""`aistack doctor`: check the configured stack; a table (or JSON) and an exit code.

Exit 0 when nothing failed (warnings allowed), 1 when a check failed, 2 for a config
error: cron, a systemd timer or Uptime Kuma can run it as is.
"""

from __future__ import annotations

import argparse
import asyncio
import sys

import orjson

from aistack.cli._common import (
    backends_of,
    config_arg,
    find_gateway,
    gateway_key,
    key_arg,
    load_config,
    table,
)
from aistack.config import ConfigError, local_url
from aistack.doctor.checks import Options, Report, Status, run


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    d = sub.add_parser(
        "doctor",
        help="check the stack: backends, URLs, declared models, prompts, database, Redis",
        description="The runbook's checks against the configured stack. "
        "Exit 0: nothing failed; 1: something failed; 2: config error.",
    )
    config_arg(d)
    d.add_argument("--json", action="store_true", help="print JSON")
    d.add_argument(
        "--prompts",
        choices=("declared", "all", "none"),
        default="declared",
        help="which models get a tiny prompt: declared (default), all listed, none",
    )
    d.add_argument("--timeout", type=float, default=120.0, help="seconds per prompt (default 120)")
    d.add_argument(
        "--gateway",
        metavar="URL",
        help="the running gateway to check (both dialects); default: the config's "
        "address, when a gateway answers there",
    )
    d.add_argument(
        "--direct",
        action="store_true",
        help="check the backends only, even if the config's gateway runs",
    )
    key_arg(d, "for the gateway")
    d.add_argument(
        "--no-embedded",
        action="store_true",
        help="do not load the embedded model when the config has no local backend",
    )
    d.set_defaults(func=_run)


def render(report: Report) -> str:
    rows = [[f.status.value, f.check, f.target, f.detail] for f in report.findings]
    lines = table(["STATUS", "CHECK", "TARGET", "RESULT"], rows).split("\n")
    out = [lines[0]]
    for f, line in zip(report.findings, lines[1:], strict=True):
        out.append(line)
        if f.fix and f.status is not Status.PASS:
            out.append(f"      fix: {f.fix}")
    c = report.count
    out.append("")
    out.append(
        f"{c(Status.FAIL)} failed, {c(Status.WARN)} warnings, {c(Status.PASS)} passed, "
        f"{c(Status.SKIP)} skipped"
    )
    return "\n".join(out)


def _run(args: argparse.Namespace) -> int:
    loaded = load_config(args)
    if loaded is None:
        return 2
    try:
        key = gateway_key(loaded, args)
    except ConfigError as e:
        print(f"aistack: {e}", file=sys.stderr)
        return 2
    running = None
    if not args.direct and not args.gateway:
        running = find_gateway(loaded, args)
    opts = Options(
        prompts=args.prompts,
        timeout=args.timeout,
        gateway=running.url if running is not None else args.gateway,
        gateway_key=key,
        embedded=not args.no_embedded,
        running=running is not None and running.admin,
    )
    if running is None and not args.gateway and not args.json:
        why = "--direct" if args.direct else f"no gateway answers at {local_url(loaded.config)}"
        print(f"Inspected: the backends directly ({why})\n")

    async def go() -> Report:
        from aistack.vectors.doctor import check

        async with backends_of(loaded) as bs:
            report = await run(loaded.config, loaded.source, bs, opts, loaded.base_dir)
        report.findings += await check(loaded, args.gateway)
        return report

    try:
        report = asyncio.run(go())
    except ConfigError as e:
        print(f"aistack: config error: {e}", file=sys.stderr)
        return 2
    if args.json:
        sys.stdout.write(orjson.dumps(report.to_json(), option=orjson.OPT_INDENT_2).decode())
        sys.stdout.write("\n")
    else:
        print(render(report))
    return 0 if report.ok else 1
