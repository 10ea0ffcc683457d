"""Where keys and the usage ledger live: SQLite by default, PostgreSQL for several replicas."""

from __future__ import annotations

import os
from pathlib import Path

from aistack.store.base import Store
from aistack.store.records import (
    KeyRecord,
    Report,
    ReportRow,
    SessionRecord,
    StoreError,
    UsageRow,
)

__all__ = [
    "KeyRecord",
    "Report",
    "ReportRow",
    "SessionRecord",
    "Store",
    "StoreError",
    "UsageRow",
    "default_sqlite_path",
    "open_store",
]


def default_sqlite_path(env: dict[str, str] | None = None) -> Path:
    """$XDG_DATA_HOME/aistack/aistack.db (~/.local/share/aistack/aistack.db).

    Not the working directory: `aistack serve` under systemd and `aistack keys` run
    from a shell must find the same file.
    """
    env = dict(os.environ) if env is None else env
    home = Path(env.get("HOME") or "~").expanduser()
    base = env.get("XDG_DATA_HOME") or str(home / ".local" / "share")
    return Path(base) / "aistack" / "aistack.db"


def open_store(
    url: str | None, base_dir: Path | None = None, data_dir: Path | None = None
) -> Store:
    """A store for `database_url`: postgresql://... or postgres://..., sqlite:///path, or a path.

    A relative SQLite path is relative to `base_dir` (the config file's folder); no URL
    is `aistack.db` in `data_dir` (default: default_sqlite_path()'s folder). Nothing
    connects until the first call.
    """
    if not url:
        from aistack.store.sqlite import SqliteStore

        return SqliteStore(data_dir / "aistack.db" if data_dir else default_sqlite_path())
    if url.startswith(("postgresql://", "postgres://")):
        from aistack.store.postgres import PostgresStore

        return PostgresStore(url)
    path_text = url
    if url.startswith("sqlite://"):
        # sqlite:///abs/path.db (empty host) or sqlite://relative/path.db
        path_text = url[len("sqlite://") :]
        if path_text.startswith("//"):
            path_text = path_text[1:]
    elif "://" in url:
        raise StoreError(f"unsupported database_url scheme in {url.split('://')[0]}://...")
    path = Path(path_text).expanduser()
    if not path.is_absolute() and base_dir is not None:
        path = base_dir / path
    from aistack.store.sqlite import SqliteStore

    return SqliteStore(path)
