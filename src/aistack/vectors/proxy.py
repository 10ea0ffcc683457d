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

import asyncio
import logging
import secrets
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlencode

import orjson

from aistack.backends.transport import (
    HttpClient,
    Timeouts,
    TransportError,
    TransportTimeout,
    parse_url,
)
from aistack.core.errors import ErrorKind, GatewayError
from aistack.dialects.qdrant import BY_NAME, Op
from aistack.vectors.engine import CollectionStats
from aistack.vectors.snapshots import snapshot_file

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

# Seconds a snapshot's creation, download or upload may take without a byte moving.
SNAPSHOT_TIMEOUT = 600.0

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
        self.slow = Timeouts(connect=5.0, first_byte=SNAPSHOT_TIMEOUT, idle=SNAPSHOT_TIMEOUT)
        self.headers = [(b"content-type", b"application/json")]
        if api_key:
            self.headers.append((b"api-key", api_key.encode()))

    async def start(self) -> None:
        log.info("vectors: proxying to the Qdrant server at %s", self.endpoint.url)

    async def close(self) -> None:
        return None

    async def _send(
        self,
        method: str,
        path: str,
        body: bytes | None,
        headers: list[tuple[bytes, bytes]] | None = None,
        timeouts: Timeouts | None = None,
    ) -> tuple[int, bytes]:
        try:
            resp = await self.client.request(
                method, self.endpoint, path, body=body, headers=headers or self.headers,
                timeouts=timeouts or self.timeouts,
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
        # Snapshots move whole collections: they get the transfer's time, not a query's.
        slow = self.slow if op.access == "admin" else None
        status, data = await self._send(
            op.method, path, orjson.dumps(body) if op.body else None, timeouts=slow
        )
        if op.name == "get_snapshot" and status == 200:
            return data  # the file itself
        return self._result(status, data)

    def _result(self, status: int, data: bytes) -> Any:
        """Qdrant's `result`, or its error as ours."""
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
        """The server's own snapshot of the collection (Qdrant's snapshot API: create,
        download, then delete it on the server, whose disk is not our backup)."""
        made = await self.call(BY_NAME["create_snapshot"], collection, "", {}, {})
        name = str(made["name"])
        try:
            data = await self.call(BY_NAME["get_snapshot"], collection, name, {}, {})
            path = snapshot_file(dest, collection, datetime.now(UTC))
            await asyncio.to_thread(_write_file, path, data)
        finally:
            try:
                await self.call(BY_NAME["delete_snapshot"], collection, name, {}, {})
            except GatewayError as e:
                log.warning("vectors: snapshot %s left on the server: %s", name, e.message)
        return path

    async def restore(self, snapshot: Path, collection: str) -> int:
        """Upload the file to the server (Qdrant's POST .../snapshots/upload, with the
        snapshot as the source of truth); the collection's points then."""
        data = await asyncio.to_thread(snapshot.read_bytes)
        boundary = "aistack-" + secrets.token_hex(16)
        filename = quote(snapshot.name, safe="")
        body = b"".join(
            (
                f"--{boundary}\r\n".encode(),
                b'Content-Disposition: form-data; name="snapshot"; filename="',
                f'{filename}"\r\n'.encode(),
                b"Content-Type: application/octet-stream\r\n\r\n",
                data,
                f"\r\n--{boundary}--\r\n".encode(),
            )
        )
        headers = [(b"content-type", f"multipart/form-data; boundary={boundary}".encode())]
        headers += [h for h in self.headers if h[0] != b"content-type"]
        path = BY_NAME["upload_snapshot"].render(collection) + "?priority=snapshot&wait=true"
        status, answer = await self._send("POST", path, body, headers, self.slow)
        self._result(status, answer)
        n = await self.call(BY_NAME["count"], collection, "", {"exact": True}, {})
        return int(n.get("count", 0))


def _write_file(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".partial")
    tmp.write_bytes(data)
    tmp.replace(path)
