"""The real PostgreSQL and Redis servers tests use, each isolated per test session.

PostgreSQL: a database named for this session, created at the start and dropped at the
end, so parallel runs never see each other's rows. Redis: a key prefix for this
session. Where a server is not running the tests that need it skip with the reason,
except under CI=true, where a missing service is a failure.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import socket
from collections.abc import Iterator
from urllib.parse import urlsplit, urlunsplit

import pytest

PG_URL = os.environ.get("AISTACK_TEST_PG", "postgresql://127.0.0.1:5432/test")
REDIS_URL = os.environ.get("AISTACK_TEST_REDIS", "redis://127.0.0.1:6379/0")


def _reachable(url: str, default_port: int) -> bool:
    u = urlsplit(url)
    try:
        with socket.create_connection((u.hostname or "127.0.0.1", u.port or default_port), 1):
            return True
    except OSError:
        return False


def _missing(what: str, url: str) -> None:
    where = urlsplit(url).netloc.rsplit("@", 1)[-1]
    msg = f"{what} is not running at {where}"
    if os.environ.get("CI") == "true":
        pytest.fail(f"{msg}; CI needs it (a missing service is a failure, not a skip)")
    pytest.skip(msg)


@contextlib.contextmanager
def postgres_database() -> Iterator[str]:
    """A fresh database on the test server; its URL. Dropped afterwards."""
    if not _reachable(PG_URL, 5432):
        _missing("PostgreSQL", PG_URL)
    import psycopg

    name = f"aistack_test_{os.getpid()}_{secrets.token_hex(4)}"
    with psycopg.connect(PG_URL, autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    u = urlsplit(PG_URL)
    url = urlunsplit((u.scheme, u.netloc, f"/{name}", u.query, u.fragment))
    try:
        yield url
    finally:
        with psycopg.connect(PG_URL, autocommit=True) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@contextlib.contextmanager
def redis_prefix() -> Iterator[tuple[str, str]]:
    """(url, a key prefix used by nobody else); the prefix's keys are deleted afterwards."""
    if not _reachable(REDIS_URL, 6379):
        _missing("Redis", REDIS_URL)
    import redis

    prefix = f"aistack-test:{os.getpid()}:{secrets.token_hex(4)}:"
    try:
        yield REDIS_URL, prefix
    finally:
        r = redis.Redis.from_url(REDIS_URL)
        try:
            keys = list(r.scan_iter(match=prefix + "*", count=1000))
            if keys:
                r.delete(*keys)
        finally:
            r.close()
