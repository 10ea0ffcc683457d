"""`aistack db upgrade|status`, and the store the other admin commands open."""

from __future__ import annotations

import argparse
import sys

from aistack.config import ConfigError, load
from aistack.store import Store, StoreError, open_store


def open_configured_store(config: str | None, *, upgrade: bool | None = None) -> Store:
    """The store the config names, at the schema this version needs.

    SQLite upgrades itself (as `serve` does); PostgreSQL must already be upgraded
    unless `upgrade` is true. Raises ConfigError or StoreError with a one-line message.
    """
    loaded = load(config)
    store = open_store(loaded.config.database_url, loaded.base_dir, loaded.data_dir)
    if upgrade is None:
        upgrade = store.kind == "sqlite"
    if upgrade:
        store.migrate()
    else:
        store.check_schema()
    return store


def run_store_command(args: argparse.Namespace, fn: object) -> int:
    """Open the store, run `fn(store, args)`, and turn failures into one line and exit 1."""
    from collections.abc import Callable

    assert callable(fn)
    call: Callable[[Store, argparse.Namespace], int] = fn
    try:
        store = open_configured_store(args.config)
    except (ConfigError, StoreError) as e:
        print(f"aistack: {e}", file=sys.stderr)
        return 1
    try:
        return call(store, args)
    except StoreError as e:
        print(f"aistack: {e}", file=sys.stderr)
        return 1
    finally:
        store.close()


def db(args: argparse.Namespace) -> int:
    try:
        loaded = load(args.config)
        store = open_store(loaded.config.database_url, loaded.base_dir, loaded.data_dir)
    except (ConfigError, StoreError) as e:
        print(f"aistack: {e}", file=sys.stderr)
        return 1
    try:
        if args.db_command == "upgrade":
            applied = store.migrate(lock_timeout=args.lock_timeout)
            for m in applied:
                print(f"applied {m.version}: {m.name}")
            print(f"{store.where}: schema at version {store.version()} (latest {store.latest()})")
        else:
            have, need = store.version(), store.latest()
            state = "up to date" if have == need else "behind" if have < need else "newer"
            print(
                f"{store.where} ({store.kind}): schema version {have}, this aistack {need}: {state}"
            )
            if have < need:
                return 3
        return 0
    except StoreError as e:
        print(f"aistack: {e}", file=sys.stderr)
        return 1
    finally:
        store.close()
