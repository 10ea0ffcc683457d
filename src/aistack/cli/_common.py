"""What the commands share: the --config option, the config, the backends, tables, and
the running gateway.

The fleet commands read the config `aistack serve` reads. `aistack models` and `aistack
doctor` first look for the gateway that config describes (its bind address, see
`config.local_url`) and, when it answers, inspect it, with the admin credential; else
they talk to the backends directly, and say which they did. A secret for the gateway
comes from `$AISTACK_KEY`, `--key-file FILE`, or the admin credential (the master key,
or the data directory's admin key): never from the command line, where other users'
`ps` would show it.
"""

from __future__ import annotations

import argparse
import os
import sys
import urllib.error
import urllib.request
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import orjson

from aistack.backends.base import Backend
from aistack.config import ConfigError, Loaded, load, local_url

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


# -- the running gateway


def key_arg(p: argparse.ArgumentParser, what: str) -> None:
    p.add_argument(
        "--key-file",
        metavar="FILE",
        help=f"{what}: a file holding the key (default: $AISTACK_KEY, else the admin "
        "credential: the master key or the data directory's admin.key)",
    )
    # Taken only to refuse it: a key on the command line shows in every user's `ps`
    # (and argparse would otherwise read `--key SECRET` as `--key-file SECRET`).
    p.add_argument("--key", dest="key_on_command_line", help=argparse.SUPPRESS)


def gateway_key(loaded: Loaded, args: argparse.Namespace) -> str | None:
    """The key to show the gateway: $AISTACK_KEY, --key-file, else the admin credential."""
    from aistack.access import credential

    if getattr(args, "key_on_command_line", None) is not None:
        raise ConfigError(
            "--key: not on the command line, where every user's `ps` shows it: put the "
            "key in $AISTACK_KEY or a file (--key-file FILE)"
        )
    env = os.environ.get("AISTACK_KEY", "").strip()
    if env:
        return env
    path = getattr(args, "key_file", None)
    if path:
        try:
            with open(path) as f:
                return f.read().strip() or None
        except OSError as e:
            raise ConfigError(f"--key-file {path}: {e.strerror or e}") from None
    try:
        cred = credential.resolve(loaded.config.auth.master_key, loaded.data_dir)
    except credential.CredentialError:
        return None
    return cred.secret if cred is not None else None


def http_get(url: str, key: str | None, timeout: float = 60.0) -> tuple[int, bytes] | None:
    """GET with a Bearer key: (status, body), or None when nothing answers."""
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    req = urllib.request.Request(url, headers=headers)  # noqa: S310  # our own gateway's URL
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:  # noqa: S310
            return int(r.status), bytes(r.read())
    except urllib.error.HTTPError as e:
        return int(e.code), bytes(e.read())
    except OSError:
        return None


@dataclass(frozen=True, slots=True)
class Running:
    """A gateway that answered: where, and whether it took our key as an admin's."""

    url: str
    key: str | None
    admin: bool
    version: str = ""


def find_gateway(
    loaded: Loaded, args: argparse.Namespace, url: str | None = None
) -> Running | None:
    """The aistack gateway at `url` (default: the config's own address), if one answers
    there. Its /admin/api/me says it is ours, and whether the key is an admin's."""
    base = (url or local_url(loaded.config)).rstrip("/")
    key = gateway_key(loaded, args)
    got = http_get(base + "/admin/api/me", key, timeout=3.0)
    if got is None:
        return None
    status, body = got
    if status == 200:
        try:
            me: dict[str, Any] = orjson.loads(body)
        except orjson.JSONDecodeError:
            return None
        return Running(base, key, True, str(me.get("version", "")))
    if status in (401, 403):  # an aistack that did not take the key
        ok = http_get(base + "/health/live", None, timeout=3.0)
        if ok is not None and ok[0] == 200 and b'"status"' in ok[1]:
            return Running(base, key, False)
    return None
