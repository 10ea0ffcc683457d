"""Qdrant's REST API as aistack serves it: the operations, their paths, the envelopes.

Pure: no I/O. Every answer is Qdrant's envelope, `{"result": ..., "status": "ok",
"time": seconds}`, and every error `{"status": {"error": "..."}, "time": seconds}` with
Qdrant's status codes (400 a bad request, 404 no such collection or point, 409 a
collection that exists already, 401/403 keys, 429 limits). The operations are the
documented ones apps use (https://api.qdrant.tech/api-reference); anything else under
the prefix is a 404 in the same shape.
"""

from __future__ import annotations

import re
import uuid
from dataclasses import dataclass
from typing import Any, Literal

import orjson

from aistack.core.errors import ErrorKind, GatewayError

# What the root object says: the Qdrant API level these routes follow. qdrant-client
# checks it against its own version (same major, minor within one).
QDRANT_API_VERSION = "1.20.0"

# Who may: anyone (public), a key on its own or a granted collection (read), a key on
# its own (write, manage), the admin only (admin: snapshots, which hold whole files).
Access = Literal["public", "read", "write", "manage", "admin"]

# Collection and alias names as Qdrant accepts them (no '/', not empty, 255 at most).
_NAME = re.compile(r"^[^/\\\x00-\x1f<>:\"|?*]{1,255}$")


@dataclass(frozen=True, slots=True)
class Op:
    """One operation of Qdrant's REST API."""

    name: str
    method: str
    path: str  # the template, relative to the API's root: /collections/{c}/points
    access: Access
    body: bool = False  # it takes a body (JSON; upload_snapshot's is multipart)

    def render(self, collection: str = "", arg: str = "") -> str:
        """The path with names filled in, each percent-encoded as one segment."""
        from urllib.parse import quote

        p = self.path.replace("{c}", quote(collection, safe=""))
        for name in ("{id}", "{field}", "{snapshot}"):
            p = p.replace(name, quote(arg, safe=""))
        return p


OPS: tuple[Op, ...] = (
    Op("root", "GET", "/", "public"),
    Op("healthz", "GET", "/healthz", "public"),
    Op("livez", "GET", "/livez", "public"),
    Op("readyz", "GET", "/readyz", "public"),
    Op("list_collections", "GET", "/collections", "read"),
    Op("update_aliases", "POST", "/collections/aliases", "manage", body=True),
    Op("list_aliases", "GET", "/aliases", "read"),
    Op("get_collection", "GET", "/collections/{c}", "read"),
    Op("create_collection", "PUT", "/collections/{c}", "manage", body=True),
    Op("update_collection", "PATCH", "/collections/{c}", "manage", body=True),
    Op("delete_collection", "DELETE", "/collections/{c}", "manage"),
    Op("collection_exists", "GET", "/collections/{c}/exists", "read"),
    Op("collection_aliases", "GET", "/collections/{c}/aliases", "read"),
    Op("create_index", "PUT", "/collections/{c}/index", "write", body=True),
    Op("delete_index", "DELETE", "/collections/{c}/index/{field}", "write"),
    Op("upsert", "PUT", "/collections/{c}/points", "write", body=True),
    Op("retrieve", "POST", "/collections/{c}/points", "read", body=True),
    Op("get_point", "GET", "/collections/{c}/points/{id}", "read"),
    Op("delete_points", "POST", "/collections/{c}/points/delete", "write", body=True),
    Op("update_vectors", "PUT", "/collections/{c}/points/vectors", "write", body=True),
    Op("delete_vectors", "POST", "/collections/{c}/points/vectors/delete", "write", body=True),
    Op("set_payload", "POST", "/collections/{c}/points/payload", "write", body=True),
    Op("overwrite_payload", "PUT", "/collections/{c}/points/payload", "write", body=True),
    Op("delete_payload", "POST", "/collections/{c}/points/payload/delete", "write", body=True),
    Op("clear_payload", "POST", "/collections/{c}/points/payload/clear", "write", body=True),
    Op("batch_update", "POST", "/collections/{c}/points/batch", "write", body=True),
    Op("scroll", "POST", "/collections/{c}/points/scroll", "read", body=True),
    Op("count", "POST", "/collections/{c}/points/count", "read", body=True),
    Op("search", "POST", "/collections/{c}/points/search", "read", body=True),
    Op("search_batch", "POST", "/collections/{c}/points/search/batch", "read", body=True),
    Op("query", "POST", "/collections/{c}/points/query", "read", body=True),
    Op("query_batch", "POST", "/collections/{c}/points/query/batch", "read", body=True),
    # Snapshots (https://api.qdrant.tech/api-reference/snapshots): create, list, download
    # (the file itself, not JSON), delete, recover from a location, recover from an
    # uploaded file (multipart/form-data, field `snapshot`).
    Op("create_snapshot", "POST", "/collections/{c}/snapshots", "admin"),
    Op("list_snapshots", "GET", "/collections/{c}/snapshots", "admin"),
    Op("recover_snapshot", "PUT", "/collections/{c}/snapshots/recover", "admin", body=True),
    Op("upload_snapshot", "POST", "/collections/{c}/snapshots/upload", "admin", body=True),
    Op("get_snapshot", "GET", "/collections/{c}/snapshots/{snapshot}", "admin"),
    Op("delete_snapshot", "DELETE", "/collections/{c}/snapshots/{snapshot}", "admin"),
)
BY_NAME = {op.name: op for op in OPS}


@dataclass(frozen=True, slots=True)
class Call:
    """A request matched to an operation: the collection and argument in its path."""

    op: Op
    collection: str = ""
    arg: str = ""  # a point id (get_point), a payload field (delete_index), a snapshot


# -- envelopes


def ok(result: object, seconds: float) -> bytes:
    return orjson.dumps({"result": result, "status": "ok", "time": round(seconds, 6)})


def error_body(message: str, seconds: float = 0.0) -> bytes:
    return orjson.dumps({"status": {"error": message}, "time": round(seconds, 6)})


def error_message(e: GatewayError) -> str:
    """Qdrant's wording: the kind of failure, then what went wrong."""
    if e.code == "qdrant":
        return e.message  # a Qdrant server's own words (the qdrant engine)
    if e.status == 404:
        return f"Not found: {e.message}"
    if e.status in (400, 409, 422):
        return f"Wrong input: {e.message}"
    if e.status in (401, 403):
        return e.message
    if e.status == 429:
        return f"Rate limit exceeded: {e.message}"
    return f"Service internal error: {e.message}"


def error_to_wire(e: GatewayError) -> dict[str, Any]:
    """An error as Qdrant answers it (its `time` is not measured here)."""
    return {"status": {"error": error_message(e)}, "time": 0.0}


def conflict(message: str) -> GatewayError:
    return GatewayError(ErrorKind.CONFLICT, message)


def not_found(message: str) -> GatewayError:
    return GatewayError(ErrorKind.NOT_FOUND, message)


def bad(message: str) -> GatewayError:
    return GatewayError(ErrorKind.INVALID_REQUEST, message)


# -- values in requests


def check_name(name: str, what: str = "collection") -> str:
    if not _NAME.match(name) or name in (".", ".."):
        raise bad(f'{what} name {name!r} is not valid: 1 to 255 characters, no / \\ : * ? " < > |')
    return name


def point_id(v: object) -> int | str:
    """A point id as Qdrant accepts it: an unsigned integer or a UUID (any of its forms,
    answered in its canonical hyphenated form)."""
    if isinstance(v, bool):
        raise bad(f"point id {v!r} is not valid: use an unsigned integer or a UUID")
    if isinstance(v, int):
        if v < 0 or v >= 1 << 64:
            raise bad(f"point id {v} is not valid: use an unsigned integer or a UUID")
        return v
    if isinstance(v, str):
        if v.isdigit():
            return int(v) if len(v) < 20 else point_id(int(v))
        try:
            return str(uuid.UUID(v))
        except ValueError:
            pass
    raise bad(f"point id {v!r} is not valid: use an unsigned integer or a UUID")


def obj(body: object, what: str = "request body") -> dict[str, Any]:
    if not isinstance(body, dict):
        raise bad(f"{what} must be a JSON object")
    return body


def update_result(operation_id: int, wait: bool = True) -> dict[str, object]:
    return {"operation_id": operation_id, "status": "completed" if wait else "acknowledged"}
