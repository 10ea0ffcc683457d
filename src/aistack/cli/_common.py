"""What the fleet commands share: the --config option, the config, the backends, tables.

These commands talk to the backends directly (the gateway need not run), with the same
config file `aistack serve` reads.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager

from aistack.backends.base import Backend
from aistack.config import ConfigError, Loaded, load

CONFIG_HELP = "YAML config (default: $AISTACK_CONFIG, ./aistack.yaml, else the embedded default)"


def config_arg(p: argparse.ArgumentParser, *, nested: bool = False) -> None:
    # A nested parser must not reset a --config given before its subcommand.
    p.add_argument(
        "--config",
        metavar="FILE",
        help=CONFIG_HELP,
        default=argparse.SUPPRESS if nested else None,
    )


def load_config(args: argparse.Namespace) -> Loaded | None:
    """The config, or None after printing the error (exit code 2)."""
    try:
        return load(getattr(args, "config", None))
    except ConfigError as e:
        print(f"aistack: config error: {e}", file=sys.stderr)
        return None


@asynccontextmanager
async def backends_of(loaded: Loaded) -> AsyncIterator[list[Backend]]:
    """The configured backends, built as the gateway builds them, closed afterwards."""
    from aistack.backends.registry import build
    from aistack.backends.transport import HttpClient

    client = HttpClient()
    try:
        built = build(loaded.config.backends, client)
    except ConfigError as e:
        await client.aclose()
        raise ConfigError(f"{loaded.source}: {e}") from None
    try:
        yield built
    finally:
        for b in built:
            try:
                await b.close()
            except Exception as e:  # closing must not hide the command's result
                print(f"aistack: closing backend {b.name} failed: {e}", file=sys.stderr)
        await client.aclose()


def table(headers: Sequence[str], rows: Sequence[Sequence[str]], indent: str = "") -> str:
    """Left-aligned columns, two spaces apart; the last column is not padded."""
    widths = [len(h) for h in headers]
    for row in rows:
        for i, cell in enumerate(row):
            widths[i] = max(widths[i], len(cell))
    out = []
    for row in [list(headers), *rows]:
        cells = [c.ljust(widths[i]) for i, c in enumerate(row[:-1])] + [row[-1]]
        out.append(indent + "  ".join(cells).rstrip())
    return "\n".join(out)
