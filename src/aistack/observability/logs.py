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

from aistack.service import RequestContext


def _iso(ts: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(ts)) + f".{int(ts % 1 * 1000):03d}Z"


def request_fields(ctx: RequestContext) -> dict[str, Any]:
    """What one request line says (also what tests and the console read)."""
    dur_ms = (ctx.end_ns - ctx.started_ns) / 1e6
    out: dict[str, Any] = {
        "ts": _iso(time.time()),
        "level": "info" if ctx.status < 500 else "error",
        "event": "request",
        "request_id": ctx.request_id,
        "method": ctx.method,
        "path": ctx.path,
        "dialect": ctx.dialect,
        "status": ctx.status,
        "duration_ms": round(dur_ms, 3),
    }
    if ctx.model:
        out["model"] = ctx.model
    if ctx.deployment is not None:
        out["backend"] = ctx.deployment.backend.name
        out["upstream_model"] = ctx.deployment.model
    if ctx.app:
        out["app"] = ctx.app
    if ctx.key_id:
        out["key_id"] = ctx.key_id
    if ctx.stream:
        out["stream"] = True
    if ctx.attempts > 1:
        out["attempts"] = ctx.attempts
    if ctx.fallbacks:
        out["fallbacks"] = ctx.fallbacks
    if ctx.first_ns:
        out["ttft_ms"] = round((ctx.first_ns - ctx.started_ns) / 1e6, 3)
    u = ctx.usage
    if u is not None:
        out["tokens_in"] = u.prompt_tokens
        out["tokens_out"] = u.completion_tokens
        if u.cost is not None:
            out["cost_usd"] = u.cost
    if ctx.error:
        out["error"] = ctx.error
    return out


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


class RequestLog:
    """The request-log observer: formats a line per request, writes them in batches."""

    def __init__(self, stream: IO[str] | None = None, fmt: str = "auto", flush: float = 0.2):
        self.stream = stream or sys.stderr
        isatty = getattr(self.stream, "isatty", lambda: False)()
        self.json = fmt == "json" or (fmt == "auto" and not isatty)
        self.flush_after = flush
        self._lines: list[str] = []
        self._timer: asyncio.TimerHandle | None = None

    def observe(self, ctx: RequestContext) -> None:
        f = request_fields(ctx)
        self._lines.append(orjson.dumps(f).decode() if self.json else _text(f))
        if self._timer is None:
            try:
                loop = asyncio.get_running_loop()
            except RuntimeError:
                self.flush()
                return
            self._timer = loop.call_later(self.flush_after, self.flush)

    def flush(self) -> None:
        self._timer = None
        if not self._lines:
            return
        lines, self._lines = self._lines, []
        try:
            self.stream.write("\n".join(lines) + "\n")
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
