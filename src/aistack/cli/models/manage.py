"""`aistack models pull|delete|copy|load|unload`: on one instance, straight to the backends."""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Sequence

from aistack.backends.base import Backend, ModelMemory, loaded_models, store_of
from aistack.cli._common import (
    backends_of,
)
from aistack.cli.progress import ProgressPrinter
from aistack.config import Config, Loaded
from aistack.core.errors import ErrorKind, GatewayError
from aistack.core.models import canonical
from aistack.fleet import placement


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


async def manage(args: argparse.Namespace, loaded: Loaded) -> int:
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


async def memory(args: argparse.Namespace, loaded: Loaded) -> int:
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
