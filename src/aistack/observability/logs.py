"""Structured logs: one line per request, JSON for collectors, readable in a terminal.

Lines are written in batches (a short timer, or on shutdown), not one write per request:
at thousands of requests a second a syscall each would cost more than the request's own
bookkeeping. Nothing secret is ever in a line: the key's id and its app, never the key;
not the end user's identity either (the usage ledger has that, under the operator's
retention).
"""

from __future__ import annotations

import asyncio
import logging
import sys
import time
from typing import IO, Any

import orjson

from aistack.core.events import Usage
from aistack.service import RequestContext

_second: tuple[int, str] = (-1, "")


def _iso(ts: float) -> str:
    global _second
    sec = int(ts)
    if _second[0] != sec:
        _second = (sec, time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(sec)))
    return f"{_second[1]}.{int(ts % 1 * 1000):03d}Z"


# What a line needs from a finished request: copied when it ends (the context holds the
# request itself, which must not wait in a queue), turned into a line at the next flush.
Snapshot = tuple[
    float,  # wall time at the end
    str,  # request id
    str,  # method
    str,  # path
    str,  # dialect
    int,  # status
    int,  # duration, ns
    str,  # model asked
    str,  # backend
    str,  # upstream model
    str,  # app
    str,  # key id
    bool,  # stream
    int,  # attempts
    int,  # fallbacks
    int,  # time to first chunk, ns
    "Usage | None",
    str,
]


def snapshot(ctx: RequestContext) -> Snapshot:
    dep = ctx.deployment
    return (
        time.time(),
        ctx.request_id,
        ctx.method,
        ctx.path,
        ctx.dialect,
        ctx.status,
        ctx.end_ns - ctx.started_ns,
        ctx.model,
        dep.backend.name if dep is not None else "",
        dep.model if dep is not None else "",
        ctx.app,
        ctx.key_id,
        ctx.stream,
        ctx.attempts,
        ctx.fallbacks,
        ctx.first_ns - ctx.started_ns if ctx.first_ns else 0,
        ctx.usage,
        ctx.error,
    )


def fields(s: Snapshot) -> dict[str, Any]:
    """What one request line says."""
    (ts, rid, method, path, dialect, status, dur_ns, model, backend, upstream, app, key_id,
     stream, attempts, fallbacks, ttft_ns, u, error) = s  # fmt: skip
    out: dict[str, Any] = {
        "ts": _iso(ts),
        "level": "info" if status < 500 else "error",
        "event": "request",
        "request_id": rid,
        "method": method,
        "path": path,
        "dialect": dialect,
        "status": status,
        "duration_ms": round(dur_ns / 1e6, 3),
    }
    if model:
        out["model"] = model
    if backend:
        out["backend"] = backend
        out["upstream_model"] = upstream
    if app:
        out["app"] = app
    if key_id:
        out["key_id"] = key_id
    if stream:
        out["stream"] = True
    if attempts > 1:
        out["attempts"] = attempts
    if fallbacks:
        out["fallbacks"] = fallbacks
    if ttft_ns:
        out["ttft_ms"] = round(ttft_ns / 1e6, 3)
    if u is not None:
        out["tokens_in"] = u.prompt_tokens
        out["tokens_out"] = u.completion_tokens
        if u.cost is not None:
            out["cost_usd"] = u.cost
    if error:
        out["error"] = error
    return out


def request_fields(ctx: RequestContext) -> dict[str, Any]:
    return fields(snapshot(ctx))


def _text(f: dict[str, Any]) -> str:
    parts = [f["ts"][11:23], str(f["status"]), f["method"], f["path"]]
    if "model" in f:
        parts.append(f["model"])
    if "backend" in f:
        parts.append(f"via {f['backend']}")
    parts.append(f"{f['duration_ms']:.1f}ms")
    for k in ("ttft_ms", "tokens_in", "tokens_out", "app", "attempts", "error"):
        if k in f:
            v = f[k]
            parts.append(f"{k}={v:.1f}" if isinstance(v, float) else f"{k}={v}")
    parts.append(f"id={f['request_id']}")
    return " ".join(parts)


# Seconds of line encoding between two turns of the event loop: a request that arrives
# meanwhile waits at most about this long.
_SLICE_S = 0.00005


class RequestLog:
    """The request-log observer: a snapshot per request, lines written in batches."""

    def __init__(self, stream: IO[str] | None = None, fmt: str = "auto", flush: float = 0.05):
        self.stream = stream or sys.stderr
        isatty = getattr(self.stream, "isatty", lambda: False)()
        self.json = fmt == "json" or (fmt == "auto" and not isatty)
        self.flush_after = flush
        self._pending: list[Snapshot] = []
        self._timer: asyncio.Handle | None = None

    def observe(self, ctx: RequestContext) -> None:
        self._pending.append(snapshot(ctx))
        if self._timer is None:
            try:
                loop = asyncio.get_running_loop()
            except RuntimeError:
                self.flush()
                return
            self._timer = loop.call_later(self.flush_after, self.flush)

    def flush(self, everything: bool = False) -> None:
        """Write what waits, a slice at a time: at thousands of requests a second, 50 ms
        of lines encoded in one go would hold the event loop for a millisecond, which
        requests would see as a tail. The rest follows at the loop's next turn."""
        if self._timer is not None:
            self._timer.cancel()
        self._timer = None
        pending = self._pending
        if not pending:
            return
        loop = None
        if not everything:
            try:
                loop = asyncio.get_running_loop()
            except RuntimeError:  # no loop (tests, shutdown): all now
                everything = True
        enc = orjson.dumps if self.json else None
        lines: list[str] = []
        clock = time.perf_counter
        until = clock() + _SLICE_S
        i = 0
        for i, p in enumerate(pending, 1):  # noqa: B007 (i: how many were written)
            f = fields(p)
            lines.append(enc(f).decode() if enc is not None else _text(f))
            if not everything and clock() >= until:
                break
        if i < len(pending) and loop is not None:
            self._pending = pending[i:]
            self._timer = loop.call_soon(self.flush)
        else:
            self._pending = []
        text = "\n".join(lines)
        try:
            self.stream.write(text + "\n")
            self.stream.flush()
        except (OSError, ValueError):
            pass  # a closed stderr must not take requests down


class JsonFormatter(logging.Formatter):
    """Every other log record as one JSON object, so a collector parses one format."""

    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {
            "ts": _iso(record.created),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        if record.exc_info:
            out["exc"] = self.formatException(record.exc_info)
        return orjson.dumps(out).decode()
