"""`aistack models`: the fleet inventory, pull/delete/copy on one instance, and sync.

The inventory comes from the running gateway when one answers at the config's address
(or at `--gateway URL`): only it knows what its embedded model has loaded. Otherwise,
and with `--direct`, from the backends themselves; the output says which. Pull, delete,
copy and sync talk to the backends directly, with the config `aistack serve` reads.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from collections.abc import Sequence
from datetime import datetime
from typing import Any

import orjson

from aistack.backends.base import Backend, ModelMemory, loaded_models, store_of
from aistack.cli._common import (
    Running,
    backends_of,
    config_arg,
    find_gateway,
    http_get,
    key_arg,
    load_config,
    table,
)
from aistack.cli.progress import ProgressPrinter
from aistack.config import Config, ConfigError, Loaded, local_url
from aistack.core.errors import ErrorKind, GatewayError
from aistack.core.fleet import PullProgress
from aistack.core.models import canonical
from aistack.fleet import inventory, placement, sync
from aistack.fleet.progress import human_bytes


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
            return _list(args, loaded)
        if cmd == "sync":
            return asyncio.run(_sync(args, loaded))
        if cmd in ("load", "unload"):
            return asyncio.run(_memory(args, loaded))
        return asyncio.run(_manage(args, loaded))
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


# -- the inventory


def _list(args: argparse.Namespace, loaded: Loaded) -> int:
    running = None if args.direct else find_gateway(loaded, args, args.gateway)
    if args.gateway and (running is None or not running.admin):
        why = "does not answer" if running is None else "refused the key"
        print(
            f"aistack: the gateway at {args.gateway} {why} "
            "(an admin key: $AISTACK_KEY, --key-file, or the admin credential)",
            file=sys.stderr,
        )
        return 1
    if running is not None and running.admin:
        data = _from_gateway(running)
        if data is None:
            return 1
        inspected = f"the running gateway at {running.url}"
    else:
        if running is not None:
            print(
                f"aistack: a gateway answers at {running.url} but refused the key; "
                "asking the backends directly",
                file=sys.stderr,
            )
        data = asyncio.run(_collect(loaded, details=not args.no_details))
        why = "--direct" if args.direct else f"no gateway answers at {local_url(loaded.config)}"
        inspected = f"the backends directly ({why})"
    data["inspected"] = inspected
    if args.json:
        sys.stdout.write(orjson.dumps(data, option=orjson.OPT_INDENT_2).decode() + "\n")
    else:
        print(f"Inspected: {inspected}\n")
        print(render_inventory(data))
    return 0 if all(b["reachable"] for b in data["backends"]) else 1


async def _collect(loaded: Loaded, *, details: bool) -> dict[str, Any]:
    cfg = loaded.config
    async with backends_of(loaded) as bs:
        inv = await inventory.collect(
            bs,
            declared={c.name: c.models for c in cfg.backends},
            discover={c.name: c.discover for c in cfg.backends},
            aliases=cfg.aliases,
            details=details,
        )
    return inv.to_json()


def _from_gateway(running: Running) -> dict[str, Any] | None:
    target = running.url + "/admin/api/models"
    got = http_get(target, running.key)
    if got is None:
        print(f"aistack: {target}: no answer", file=sys.stderr)
        return None
    status, body = got
    if status != 200:
        print(f"aistack: {target}: {status} {body[:300].decode('utf-8', 'replace')}",
              file=sys.stderr)  # fmt: skip
        return None
    try:
        data: dict[str, Any] = orjson.loads(body)
    except orjson.JSONDecodeError as e:
        print(f"aistack: {target}: {e}", file=sys.stderr)
        return None
    return data


def _when(iso: str | None, *, date_only: bool = False) -> str:
    if not iso:
        return "-"
    t = datetime.fromisoformat(iso.replace("Z", "+00:00")).astimezone()
    if date_only:
        return t.strftime("%Y-%m-%d")
    if abs(t.timestamp() - time.time()) < 86400:
        return t.strftime("%H:%M")
    return t.strftime("%Y-%m-%d %H:%M")


def _loaded(inst: dict[str, Any]) -> str:
    if inst["present"] is False:
        return "MISSING (declared, not on the backend)"
    if inst["present"] is None:
        return "? (cannot ask the backend)"
    ld = inst.get("loaded")
    if not ld:
        return "-"
    where = f"{human_bytes(ld['size_vram'])} VRAM" if ld["size_vram"] else "in RAM"
    until = f"until {_when(ld['expires_at'])}" if ld["expires_at"] else "kept loaded"
    return f"{where}, {until}"


def render_inventory(data: dict[str, Any]) -> str:
    lines = ["BACKENDS"]
    rows = []
    for b in data["backends"]:
        if not b["discover"]:
            state = "not asked (discover: false)"
        elif b["reachable"]:
            state = f"{b['latency_ms']:.0f} ms, {b['models']} models, {b['loaded']} loaded"
        else:
            state = f"UNREACHABLE: {b['error']}"
        manage = "pull/delete" if b["manages_models"] else "read-only"
        rows.append([b["name"], b["kind"], b["url"] or "(in process)", manage, state])
    lines.append(table(["NAME", "KIND", "URL", "MANAGE", "STATE"], rows, indent="  "))
    lines.append("")
    rows = []
    for m in data["models"]:
        for inst in m["instances"]:
            present = inst["present"] is True
            rows.append(
                [
                    m["name"],
                    inst["backend"],
                    human_bytes(inst["size"]) if present and inst["size"] else "-",
                    inst["family"] or "-",
                    inst["parameter_size"] or "-",
                    inst["quantization"] or "-",
                    _when(inst["modified_at"], date_only=True),
                    inst["digest"][:12] or "-",
                    ",".join(m["aliases"]) or "-",
                    _loaded(inst),
                ]
            )
    headers = ["MODEL", "BACKEND", "SIZE", "FAMILY", "PARAMS", "QUANT", "MODIFIED", "DIGEST"]
    lines.append(table([*headers, "ALIASES", "LOADED"], rows) if rows else "no models")
    return "\n".join(lines)


# -- pull, delete, copy


async def _present(bs: Sequence[Backend]) -> dict[str, set[str]]:
    """What each Ollama backend has, for the placement rule (unreachable ones: nothing)."""

    async def one(b: Backend) -> set[str]:
        try:
            return {canonical(c.name) for c in await b.list_models()}
        except GatewayError:
            return set()

    pool = placement.managed(bs)
    found = await asyncio.gather(*(one(b) for b in pool))
    return {b.name: names for b, names in zip(pool, found, strict=True)}


def _where(b: Backend) -> str:
    url = b.describe().get("url")
    return f"{b.name} ({url})" if url else b.name


async def _manage(args: argparse.Namespace, loaded: Loaded) -> int:
    cfg = loaded.config
    cmd: placement.Action = args.models_command
    model = args.model if cmd != "copy" else args.source
    if cmd == "pull":
        model = placement.resolve_alias(model, cfg.aliases)
    async with backends_of(loaded) as bs:
        try:
            present = {} if args.instance else await _present(bs)
            b = placement.choose(
                cmd,
                model,
                bs,
                explicit=args.instance,
                declared={c.name: c.models for c in cfg.backends},
                present=present,
            )
            if cmd == "pull":
                print(f"pulling {model} onto {_where(b)}", flush=True)
                printer = ProgressPrinter()
                try:
                    async for p in store_of(b, "pull").pull(model, insecure=args.insecure):
                        printer.update(p)
                finally:
                    printer.close()
            elif cmd == "delete":
                await store_of(b, "delete").delete(model)
                print(f"deleted {model} from {_where(b)}")
            else:
                await store_of(b, "copy").copy(args.source, args.destination)
                print(f"copied {args.source} to {args.destination} on {_where(b)}")
        except GatewayError as e:
            hint = ""
            if cmd == "pull" and e.kind is not ErrorKind.INVALID_REQUEST:
                hint = "; run the same command again to resume (Ollama keeps what it has)"
            print(f"aistack: {e.message}{hint}", file=sys.stderr)
            return 1
    return 0


# -- load and unload


def _keep_alive(text: str | None) -> float | str | None:
    if text is None:
        return None
    try:
        return float(text)
    except ValueError:
        return text


async def _memory(args: argparse.Namespace, loaded: Loaded) -> int:
    """`aistack models load|unload MODEL [--instance NAME]`."""
    cfg = loaded.config
    model = placement.resolve_alias(args.model, cfg.aliases)
    key = canonical(model)
    async with backends_of(loaded) as bs:
        # Instances reached over the network (an embedded engine lives in the gateway).
        pool = [b for b in bs if isinstance(b, ModelMemory) and b.probes]
        try:
            if args.instance:
                b = next((x for x in bs if x.name == args.instance), None)
                if b is None:
                    names = ", ".join(x.name for x in bs) or "none"
                    print(f"aistack: no backend named '{args.instance}' ({names})", file=sys.stderr)
                    return 1
                if not isinstance(b, ModelMemory) or not b.probes:
                    raise b.cannot("load or unload models from the command line")
                targets: list[Backend] = [b]
            else:
                holding = await _holding(pool, key)
                if args.models_command == "unload":
                    targets = holding
                    if not targets:
                        print(f"{model} is not loaded anywhere")
                        return 0
                else:
                    targets = holding[:1] or _where_to_load(pool, model, cfg, await _present(pool))
            for b in targets:
                assert isinstance(b, ModelMemory)
                if args.models_command == "load":
                    await b.load(model, _keep_alive(args.keep_alive))
                    print(f"loaded {model} on {_where(b)}")
                else:
                    await b.unload(model)
                    print(f"unloaded {model} from {_where(b)}")
        except GatewayError as e:
            print(f"aistack: {e.message}", file=sys.stderr)
            return 1
    return 0


async def _holding(pool: Sequence[Backend], key: str) -> list[Backend]:
    """The backends that have `key` loaded now (those that do not answer: not)."""

    async def one(b: Backend) -> bool:
        try:
            return any(canonical(m.name) == key for m in await loaded_models(b))
        except GatewayError:
            return False

    found = await asyncio.gather(*(one(b) for b in pool))
    return [b for b, yes in zip(pool, found, strict=True) if yes]


def _where_to_load(
    pool: Sequence[Backend], model: str, cfg: Config, present: dict[str, set[str]]
) -> list[Backend]:
    key = canonical(model)
    declared = {c.name: {canonical(m) for m in c.models} for c in cfg.backends}
    for b in pool:
        if key in declared.get(b.name, set()):
            return [b]
    for b in pool:
        if key in present.get(b.name, set()):
            return [b]
    raise GatewayError(ErrorKind.NOT_FOUND, f"no instance has '{model}'; pull it first")


# -- sync


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


async def _sync(args: argparse.Namespace, loaded: Loaded) -> int:
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
