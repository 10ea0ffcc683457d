"""The `qdrant` engine: a Qdrant server or cluster, behind aistack.

Each operation becomes the same documented REST call on the server (with the physical
names the service chose), sent with the project's own HTTP client
(backends/transport.py) and the server's `api-key`; the server's answer comes back as
it is, and its errors keep their status and words. Nothing beyond Qdrant's documented
API is used, so scale-out is Qdrant's own clustering. (No Qdrant server can be
installed where aistack is built and tested: the tests run this engine against a
second aistack process, which serves the same API.)
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import orjson

from aistack.backends.transport import (
    HttpClient,
    Timeouts,
    TransportError,
    TransportTimeout,
    parse_url,
)
from aistack.core.errors import ErrorKind, GatewayError
from aistack.dialects.qdrant import BY_NAME, Op, bad
from aistack.vectors.engine import CollectionStats

log = logging.getLogger("aistack.vectors")

# A Qdrant server's statuses as ours: the caller's mistakes stay the caller's (the request
# is the caller's, forwarded), the server's trouble is upstream trouble.
_KINDS = {
    400: ErrorKind.INVALID_REQUEST,
    401: ErrorKind.UPSTREAM_FAILED,
    403: ErrorKind.UPSTREAM_FAILED,
    404: ErrorKind.NOT_FOUND,
    409: ErrorKind.CONFLICT,
    413: ErrorKind.PAYLOAD_TOO_LARGE,
    422: ErrorKind.INVALID_REQUEST,
    429: ErrorKind.UPSTREAM_RATE_LIMITED,
    503: ErrorKind.UPSTREAM_ERROR,
    504: ErrorKind.UPSTREAM_TIMEOUT,
}

# Query parameters of Qdrant's API that pass through (wait for the write, and so on).
_PARAMS = ("wait", "ordering", "timeout", "consistency", "exact")


class ProxyEngine:
    kind = "qdrant"

    def __init__(
        self, url: str, api_key: str | None, client: HttpClient, *, timeout: float = 60.0
    ) -> None:
        self.endpoint = parse_url(url)
        self.client = client
        self.timeouts = Timeouts(connect=5.0, first_byte=timeout, idle=timeout, total=timeout)
        self.headers = [(b"content-type", b"application/json")]
        if api_key:
            self.headers.append((b"api-key", api_key.encode()))

    async def start(self) -> None:
        log.info("vectors: proxying to the Qdrant server at %s", self.endpoint.url)

    async def close(self) -> None:
        return None

    async def _send(self, method: str, path: str, body: bytes | None) -> tuple[int, bytes]:
        try:
            resp = await self.client.request(
                method, self.endpoint, path, body=body, headers=self.headers,
                timeouts=self.timeouts,
            )  # fmt: skip
            return resp.status, await resp.read()
        except TransportTimeout as e:
            raise GatewayError(
                ErrorKind.UPSTREAM_TIMEOUT, f"the Qdrant server did not answer in time: {e}"
            ) from None
        except TransportError as e:
            raise GatewayError(
                ErrorKind.UPSTREAM_UNREACHABLE, f"cannot reach the Qdrant server: {e}"
            ) from None

    async def ready(self) -> tuple[bool, str]:
        try:
            status, data = await self._send("GET", "/readyz", None)
        except GatewayError as e:
            return False, e.message
        return (True, "ready") if status == 200 else (False, data.decode(errors="replace")[:200])

    async def call(
        self, op: Op, collection: str, arg: str, body: dict[str, Any], params: dict[str, str]
    ) -> Any:
        path = op.render(collection, arg)
        passed = {k: v for k, v in params.items() if k in _PARAMS}
        if passed:
            path += "?" + urlencode(passed)
        status, data = await self._send(op.method, path, orjson.dumps(body) if op.body else None)
        try:
            answer = orjson.loads(data) if data else {}
        except orjson.JSONDecodeError:
            answer = None
        if status >= 400 or not isinstance(answer, dict):
            err = answer.get("status", {}) if isinstance(answer, dict) else {}
            msg = err.get("error") if isinstance(err, dict) else None
            text = str(msg) if msg else data.decode(errors="replace")[:300] or f"status {status}"
            kind = _KINDS.get(status)
            if kind is None:
                kind = (
                    ErrorKind.INVALID_REQUEST if 400 <= status < 500 else ErrorKind.UPSTREAM_FAILED
                )
            if status in (401, 403):
                # The server refused aistack's own key: the operator's problem, not the app's.
                text = f"the Qdrant server refused aistack's api_key: {text}"
            raise GatewayError(kind, text, code="qdrant", upstream_status=status)
        return answer.get("result")

    async def vector_sizes(self, collection: str) -> dict[str, int]:
        info = await self.call(BY_NAME["get_collection"], collection, "", {}, {})
        v = (info.get("config", {}).get("params", {}) or {}).get("vectors") or {}
        if "size" in v:
            return {"": int(v["size"])}
        return {str(k): int(p["size"]) for k, p in v.items() if isinstance(p, dict)}

    async def stats(self) -> list[CollectionStats]:
        listed = await self.call(BY_NAME["list_collections"], "", "", {}, {})
        out = []
        for c in listed.get("collections", []):
            name = c["name"]
            try:
                info = await self.call(BY_NAME["get_collection"], name, "", {}, {})
                sizes = await self.vector_sizes(name)
            except GatewayError:
                continue  # dropped meanwhile
            out.append(
                CollectionStats(
                    name,
                    int(info.get("points_count") or 0),
                    sizes,
                    None,
                    None,
                    int(info.get("segments_count") or 0),
                    int(info.get("indexed_vectors_count") or 0),
                    str(info.get("status") or ""),
                )
            )
        return out

    async def snapshot(self, collection: str, dest: Path) -> Path:
        raise bad("snapshots of collections on a Qdrant server: use the server's own snapshots")

    async def restore(self, snapshot: Path, collection: str) -> int:
        raise bad("restoring onto a Qdrant server: use the server's own snapshot recovery")
