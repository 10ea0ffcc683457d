"""`aistack models` (list): the inventory, from the running gateway or the backends."""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from datetime import datetime
from typing import Any

import orjson

from aistack.cli._common import (
    Running,
    backends_of,
    find_gateway,
    http_get,
    table,
)
from aistack.config import Loaded, local_url
from aistack.fleet import inventory
from aistack.fleet.progress import human_bytes


def list_models(args: argparse.Namespace, loaded: Loaded) -> int:
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
