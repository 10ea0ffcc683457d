"""Doctor checks for what is not a backend: the database, Redis, a running gateway, and
the small HTTP probes that tell a wrong dialect from a dead box.

The database and Redis checks speak just enough of each protocol to know the server is
there and answers (SQLite: the file opens; PostgreSQL: the port accepts; Redis: PING,
after AUTH when the URL has a password); no driver is needed.
"""

from __future__ import annotations

import asyncio
import os
import sqlite3
import time
from pathlib import Path
from urllib.parse import unquote, urlsplit

import orjson

from aistack.backends.transport import HttpClient, Timeouts, TransportError, parse_url
from aistack.config import Config
from aistack.doctor.findings import Finding, failed, ms, passed, since, skipped
from aistack.doctor.urls import url_problem


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


def _sqlite_path(url: str) -> Path:
    # sqlite:///abs/path.db, sqlite://rel/path.db, or a plain path
    if url.startswith("sqlite://"):
        return Path(unquote(url[len("sqlite://") :]))
    return Path(url).expanduser()


Stream = tuple[asyncio.StreamReader, asyncio.StreamWriter]


async def _tcp(host: str, port: int, wait: float) -> Stream:
    async with asyncio.timeout(wait):
        return await asyncio.open_connection(host, port)


async def database(cfg: Config) -> list[Finding]:
    url: str | None = getattr(cfg, "database_url", None)
    if not url:
        return [skipped("database", "-", "no database_url in the config")]
    t = time.monotonic()
    if url.startswith(("postgresql://", "postgres://")):
        p = urlsplit(url)
        host, port = p.hostname or "localhost", p.port or 5432
        target = f"postgresql://{host}:{port}{p.path}"
        try:
            _, w = await _tcp(host, port, 5.0)
            w.close()
        except (OSError, TimeoutError) as e:
            return [
                failed(
                    "database",
                    target,
                    f"cannot connect: {e}",
                    "start PostgreSQL or correct database_url",
                    since(t),
                )
            ]
        return [
            passed("database", target, f"accepts connections ({ms(since(t))})", seconds=since(t))
        ]
    path = _sqlite_path(url)
    target = f"sqlite:{path}"
    if not path.exists():
        parent = path.parent
        if parent.is_dir() and os.access(parent, os.W_OK):
            return [passed("database", target, "not created yet; its directory is writable")]
        return [
            failed(
                "database",
                target,
                f"{parent} is missing or not writable",
                f"mkdir -p {parent}, or correct database_url",
            )
        ]
    try:
        con = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=5)
        try:
            con.execute("select count(*) from sqlite_master").fetchone()
        finally:
            con.close()
    except sqlite3.Error as e:
        return [
            failed(
                "database",
                target,
                f"cannot read it: {e}",
                "check the file's permissions, or restore it",
            )
        ]
    return [passed("database", target, "readable", seconds=since(t))]


async def redis(cfg: Config) -> list[Finding]:
    url: str | None = getattr(cfg, "redis_url", None)
    if not url:
        return [skipped("redis", "-", "no redis_url in the config")]
    p = urlsplit(url)
    host, port = p.hostname or "localhost", p.port or 6379
    target = f"{p.scheme}://{host}:{port}"
    if p.scheme != "redis":
        return [skipped("redis", target, f"{p.scheme}:// is not checked here")]
    t = time.monotonic()
    try:
        r, w = await _tcp(host, port, 5.0)
        try:
            cmds = []
            if p.password:
                user = unquote(p.username or "")
                args = [b"AUTH", *([user.encode()] if user else []), unquote(p.password).encode()]
                cmds.append(args)
            cmds.append([b"PING"])
            for args in cmds:
                parts = [b"$%d\r\n%s\r\n" % (len(a), a) for a in args]
                w.write(b"*%d\r\n" % len(args) + b"".join(parts))
            await w.drain()
            async with asyncio.timeout(5.0):
                replies = [await r.readline() for _ in cmds]
        finally:
            w.close()
    except (OSError, TimeoutError) as e:
        return [
            failed(
                "redis",
                target,
                f"cannot connect: {e or 'timed out'}",
                "start Redis or correct redis_url",
                since(t),
            )
        ]
    last = replies[-1].strip()
    if any(x.startswith(b"-") for x in replies):
        err = next(x for x in replies if x.startswith(b"-")).strip().decode("utf-8", "replace")
        fix = "check the password (redis://:PASSWORD@host:6379/0)"
        return [failed("redis", target, f"answered {err}", fix, since(t))]
    if last != b"+PONG":
        return [failed("redis", target, f"answered {last!r} to PING", "is this Redis?", since(t))]
    return [passed("redis", target, f"PONG in {ms(since(t))}", seconds=since(t))]


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
    for path, key, what in (
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
        if status != 200 or not is_json_with(body, key):
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
        count = len(obj[key] or [])
        n = obj[key] if key == "version" else f"{count} model{'s' if count != 1 else ''}"
        out.append(passed("gateway", base + path, f"{what}: {n} ({ms(took)})", seconds=took))
    return out
