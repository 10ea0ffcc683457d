"""SQLite: the default store, one file, WAL so readers (the CLI, reports) never block the writer."""

from __future__ import annotations

import contextlib
import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from aistack.store.base import Store
from aistack.store.records import StoreError


class SqliteStore(Store):
    kind = "sqlite"

    def __init__(self, path: Path) -> None:
        super().__init__(str(path))
        self.path = path

    def _connect(self) -> sqlite3.Connection:
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            conn = sqlite3.connect(
                self.path, isolation_level=None, check_same_thread=False, timeout=10.0
            )
            conn.execute("PRAGMA journal_mode=WAL")
            # In WAL mode NORMAL loses at most the last transactions on power loss,
            # never consistency; FULL would fsync every batch.
            conn.execute("PRAGMA synchronous=NORMAL")
        except (OSError, sqlite3.Error) as e:
            raise StoreError(f"cannot open database {self.path}: {e}") from None
        return conn

    def _has_table(self, name: str) -> bool:
        sql = "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?"
        return bool(self._rows(sql, (name,)))

    def _id_column(self) -> str:
        return "INTEGER PRIMARY KEY"

    @contextlib.contextmanager
    def _migration_lock(self, timeout: float) -> Iterator[None]:
        # A file lock beside the database: two processes starting at once (a serve and
        # a CLI command) apply the steps once.
        import fcntl
        import time

        self.path.parent.mkdir(parents=True, exist_ok=True)
        with open(f"{self.path}.migrate-lock", "a") as f:
            deadline = time.monotonic() + timeout
            while True:
                try:
                    fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    break
                except BlockingIOError:
                    if time.monotonic() > deadline:
                        raise StoreError(
                            f"database {self.path}: another process holds the migration lock"
                        ) from None
                    time.sleep(0.05)
            try:
                yield
            finally:
                fcntl.flock(f, fcntl.LOCK_UN)

    @contextlib.contextmanager
    def _transaction(self) -> Iterator[Any]:
        conn = self.conn
        cur = conn.cursor()
        cur.execute("BEGIN IMMEDIATE")
        try:
            yield cur
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        else:
            conn.execute("COMMIT")
        finally:
            cur.close()
