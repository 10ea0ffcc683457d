"""Doctor checks for what is not a backend: the database, Redis, a running gateway, and
the small HTTP probes that tell a wrong dialect from a dead box.

The database check opens the store keys and the usage ledger use (SQLite by default,
or `database_url`) and reads its schema version; the Redis check speaks just enough of
the protocol to send PING (after AUTH when the URL has a password).
"""

from __future__ import annotations

import asyncio
import os
import time
from pathlib import Path
from urllib.parse import unquote, urlsplit

import orjson

from aistack.backends.transport import HttpClient, Timeouts, TransportError, parse_url
from aistack.config import Config, data_dir_of
from aistack.doctor.findings import Finding, failed, ms, passed, since, skipped, warned
from aistack.doctor.urls import url_problem
from aistack.store import Store, StoreError, open_store
from aistack.store.sqlite import SqliteStore


async def get(
    client: HttpClient, url: str, wait: float = 3.0, key: str | None = None
) -> tuple[int, bytes] | None:
    headers = [(b"authorization", b"Bearer " + key.encode())] if key else None
    try:
        ep = parse_url(url)
        t = Timeouts(connect=wait, first_byte=wait, idle=wait, total=wait * 2)
        resp = await client.request("GET", ep, "", headers=headers, timeouts=t)
        return resp.status, await resp.read()
    except (TransportError, ValueError):
        return None


def is_json_with(body: bytes, key: str) -> bool:
    try:
        obj = orjson.loads(body)
    except orjson.JSONDecodeError:
        return False
    return isinstance(obj, dict) and key in obj


Stream = tuple[asyncio.StreamReader, asyncio.StreamWriter]


async def _tcp(host: str, port: int, wait: float) -> Stream:
    async with asyncio.timeout(wait):
        return await asyncio.open_connection(host, port)


def _writable_dir(path: Path) -> bool:
    """The folder exists and is writable, or the nearest existing parent is (mkdir works)."""
    for d in (path, *path.parents):
        if d.exists():
            return d.is_dir() and os.access(d, os.W_OK)
    return False


def _schema(store: Store) -> tuple[int, int]:
    try:
        return store.version(), store.latest()
    finally:
        store.close()


async def database(cfg: Config, base_dir: Path | None = None) -> list[Finding]:
    """The store keys and the ledger use: it opens, and its schema is this version's."""
    try:
        store = open_store(cfg.database_url, base_dir, data_dir_of(cfg, base_dir))
    except StoreError as e:
        return [failed("database", cfg.database_url or "-", str(e), "correct database_url")]
    target = f"{store.kind} {store.where}"
    if isinstance(store, SqliteStore) and not store.path.exists():
        if _writable_dir(store.path.parent):
            return [passed("database", target, "not created yet; aistack serve creates it")]
        return [
            failed(
                "database",
                target,
                f"{store.path.parent} cannot be created or written",
                "make that folder writable for aistack, or set database_url",
            )
        ]
    t = time.monotonic()
    try:
        have, need = await asyncio.wait_for(asyncio.to_thread(_schema, store), 15.0)
    except (StoreError, TimeoutError) as e:
        what = "PostgreSQL" if store.kind == "postgres" else "the database"
        msg = str(e) or "no answer in 15 s"
        return [failed("database", target, msg, f"start {what} or correct database_url", since(t))]
    took = since(t)
    if have < need and store.kind != "sqlite":
        return [
            failed(
                "database",
                target,
                f"schema version {have}, this aistack needs {need}",
                "aistack db upgrade (once, from one place)",
                took,
            )
        ]
    if have > need:
        return [
            warned(
                "database",
                target,
                f"schema version {have} is newer than this aistack ({need})",
                "upgrade aistack here (an older one keeps working meanwhile)",
                took,
            )
        ]
    note = "" if have == need else f"; SQLite upgrades itself to {need} when serve starts"
    return [passed("database", target, f"schema version {have}{note} ({ms(took)})", took)]


def _redacted(url: str) -> str:
    p = urlsplit(url)
    where = p.hostname or p.path or "localhost"
    return f"{p.scheme}://{where}:{p.port or 6379}" if p.hostname else f"{p.scheme}://{where}"


async def _ping_raw(url: str) -> str:
    """PING over a plain redis:// connection, AUTH first if the URL has a password."""
    p = urlsplit(url)
    r, w = await _tcp(p.hostname or "localhost", p.port or 6379, 5.0)
    try:
        cmds: list[list[bytes]] = []
        if p.password:
            user = unquote(p.username or "")
            cmds.append([b"AUTH", *([user.encode()] if user else []), unquote(p.password).encode()])
        cmds.append([b"PING"])
        for args in cmds:
            parts = [b"$%d\r\n%s\r\n" % (len(a), a) for a in args]
            w.write(b"*%d\r\n" % len(args) + b"".join(parts))
        await w.drain()
        async with asyncio.timeout(5.0):
            replies = [(await r.readline()).strip() for _ in cmds]
    finally:
        w.close()
    for reply in replies:
        if reply.startswith(b"-"):
            raise ConnectionError(reply[1:].decode("utf-8", "replace"))
    return replies[-1].decode("utf-8", "replace").lstrip("+")


async def _ping(url: str) -> str:
    try:
        import redis.asyncio as aioredis
    except ImportError:  # without the redis extra: plain redis:// only
        if not url.startswith("redis://"):
            raise ConnectionError("install aistack[redis] to check rediss:// or unix://") from None
        return await _ping_raw(url)
    r = aioredis.Redis.from_url(url, socket_timeout=5, socket_connect_timeout=5)
    try:
        return "PONG" if await r.ping() else "no PONG"
    finally:
        await r.aclose()


async def redis(cfg: Config) -> list[Finding]:
    """Redis answers PING (the limits every replica shares)."""
    url = cfg.redis_url
    if not url:
        return [skipped("redis", "-", "no redis_url: limits are kept per process")]
    target = _redacted(url)
    t = time.monotonic()
    try:
        answer = await _ping(url)
    except Exception as e:  # the client's many error types, each one line here
        msg = str(e) or type(e).__name__
        fix = (
            "check the password (redis://:PASSWORD@host:6379/0)"
            if "auth" in msg.lower() or "password" in msg.lower()
            else "start Redis or correct redis_url"
        )
        return [failed("redis", target, f"no answer: {msg}", fix, since(t))]
    if answer != "PONG":
        return [failed("redis", target, f"answered {answer!r} to PING", "is this Redis?", since(t))]
    took = since(t)
    return [passed("redis", target, f"PONG in {ms(took)}", took)]


async def gateway(client: HttpClient, url: str, key: str | None = None) -> list[Finding]:
    p = url_problem("ollama", url)
    if p is not None:
        fix = p.fix.replace("url: ", "--gateway ")
        return [
            failed(
                "gateway", url, p.detail.replace("an Ollama backend's url", "the gateway URL"), fix
            )
        ]
    base = url.rstrip("/")
    out: list[Finding] = []
    for path, field, what in (
        ("/api/version", "version", "Ollama API"),
        ("/api/tags", "models", "Ollama model list"),
        ("/v1/models", "data", "OpenAI model list"),
    ):
        t = time.monotonic()
        r = await get(client, base + path, wait=10.0, key=key)
        took = since(t)
        if r is None:
            return [
                *out,
                failed(
                    "gateway",
                    base + path,
                    "unreachable",
                    "start it (aistack serve) or correct --gateway",
                    took,
                ),
            ]
        status, body = r
        if status == 401:
            out.append(
                failed(
                    "gateway",
                    base + path,
                    "401: it needs a key",
                    "give it one in $AISTACK_KEY or --key-file (a virtual key, or the master key)",
                    took,
                )
            )
            continue
        if status != 200 or not is_json_with(body, field):
            out.append(
                failed(
                    "gateway",
                    base + path,
                    f"answered {status}: {body[:120]!r}",
                    "is this an aistack gateway? see its log",
                    took,
                )
            )
            continue
        obj = orjson.loads(body)
        count = len(obj[field] or [])
        n = obj[field] if field == "version" else f"{count} model{'s' if count != 1 else ''}"
        out.append(passed("gateway", base + path, f"{what}: {n} ({ms(took)})", seconds=took))
    return out
