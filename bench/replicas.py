"""Replica mode for `make bench`: the bench's gateway with its ledger on PostgreSQL and
its limits on Redis (the real servers of this machine), and the check that a ledger
kept up (rows == requests answered, and how long after the last request).

The PostgreSQL database is the run's own (made on the server's `test` database, dropped
at the end), the Redis keys under a prefix of the run's own (deleted at the end), as the
tests do (tests/services.py).
"""

from __future__ import annotations

import os
import secrets
import socket
import sqlite3
import time
from collections.abc import Callable
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import yaml


class Replica:
    def __init__(
        self, base_config: Path, pg_server: str, redis_url: str, out: Path, env: dict[str, str]
    ) -> None:
        import psycopg
        import redis

        redis.Redis.from_url(redis_url).ping()  # fails here when there is no Redis
        self.pg_server = pg_server
        self.redis_url = redis_url
        self.database = f"aistack_bench_{os.getpid()}_{secrets.token_hex(3)}"
        with psycopg.connect(pg_server, autocommit=True, connect_timeout=5) as admin:
            admin.execute(f'CREATE DATABASE "{self.database}"')
        u = urlsplit(pg_server)
        self.url = urlunsplit((u.scheme, u.netloc, f"/{self.database}", u.query, u.fragment))
        self.prefix = f"aistack-bench:{os.getpid()}:{secrets.token_hex(3)}:"
        cfg = yaml.safe_load(base_config.read_text())
        cfg["database_url"] = "${AISTACK_BENCH_DB}"
        cfg["redis_url"] = "${AISTACK_BENCH_REDIS}"
        cfg.setdefault("limits", {})["redis_prefix"] = self.prefix
        self.config = out / "aistack-replica.yaml"
        self.config.write_text(
            "# bench/configs/aistack.yaml in replica mode (written by bench/replicas.py)\n"
            + yaml.safe_dump(cfg, sort_keys=False)
        )
        self.env = {
            **env,
            "AISTACK_BENCH_DB": self.url,
            "AISTACK_BENCH_REDIS": redis_url,
        }

    def rows(self) -> int:
        import psycopg

        with psycopg.connect(self.url, connect_timeout=5) as c:
            got = c.execute("SELECT count(*) FROM requests").fetchone()
        return int(got[0]) if got else 0

    def drop(self) -> None:
        import psycopg
        import redis

        try:
            with psycopg.connect(self.pg_server, autocommit=True, connect_timeout=5) as admin:
                admin.execute(f'DROP DATABASE IF EXISTS "{self.database}" WITH (FORCE)')
        except psycopg.Error:
            pass
        r = redis.Redis.from_url(self.redis_url)
        keys = list(r.scan_iter(match=self.prefix + "*", count=1000))
        if keys:
            r.delete(*keys)


def sqlite_rows(path: Path) -> int:
    with sqlite3.connect(path, timeout=10) as c:
        got = c.execute("SELECT count(*) FROM requests").fetchone()
    return int(got[0]) if got else 0


def answered(port: int, auth: str) -> int:
    """Model requests the gateway answered for the bench's key (its app is `bench`): the
    sum of `aistack_requests_total{app="bench"}` on its /metrics, less its scrapes (the
    ledger records model operations only)."""
    head = f"GET /metrics HTTP/1.1\r\nHost: x\r\nAuthorization: {auth}\r\nConnection: close\r\n\r\n"
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        s.sendall(head.encode())
        data = b""
        while chunk := s.recv(65536):
            data += chunk
    body = data.partition(b"\r\n\r\n")[2].decode(errors="replace")
    return int(
        sum(
            float(line.rsplit(" ", 1)[1])
            for line in body.splitlines()
            if line.startswith("aistack_requests_total{")
            and 'app="bench"' in line
            and 'route="metrics"' not in line
        )
    )


def wait_rows(
    count: Callable[[], int], want: int, since: float, limit: float = 60.0
) -> tuple[int, float]:
    """Rows once they reach `want` (or after `limit` s), and seconds since `since`."""
    rows = count()
    while rows < want and time.perf_counter() - since < limit:
        time.sleep(0.05)
        rows = count()
    return rows, time.perf_counter() - since
