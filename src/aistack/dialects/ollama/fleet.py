"""Ollama's model management wire: /api/pull progress, /api/delete, /api/copy.

Server side (an app asks the gateway to manage a model): `pull_request_from_wire`,
`delete_request_from_wire`, `copy_request_from_wire`, `progress_to_wire`.
Client side (the gateway asks an Ollama backend): `progress_from_wire`.

Ollama's pull streams `{"status": ..., "digest": ..., "total": ..., "completed": ...}`
lines (the byte counts absent until they mean something) and ends with
`{"status": "success"}`; a failure mid-pull is an `{"error": ...}` line.
"""

from __future__ import annotations

from aistack.core.chat import JSONObject
from aistack.core.errors import ErrorKind, GatewayError, invalid
from aistack.core.fleet import PullProgress, PullRequest
from aistack.core.models import check_name
from aistack.dialects._fields import body_object, opt_bool, opt_str, require_model


def _int(v: object) -> int:
    if isinstance(v, bool) or not isinstance(v, int | float):
        return 0
    return int(v)


_NO_MANIFEST = "pull model manifest: file does not exist"


def progress_from_wire(obj: JSONObject, backend: str) -> PullProgress:
    """One progress line from an Ollama backend; an error line raises."""
    if "error" in obj:
        err = obj.get("error")
        msg = err if isinstance(err, str) else str(err)
        # Ollama's word for a name its registry does not have: the caller's doing (a
        # 404, as a chat with an unknown model), not the backend failing (a 502).
        kind = ErrorKind.NOT_FOUND if _NO_MANIFEST in msg else ErrorKind.UPSTREAM_FAILED
        raise GatewayError(
            kind,
            f"backend '{backend}' failed: {msg}" if backend else msg,
            backend=backend,
        )
    status = obj.get("status")
    return PullProgress(
        status=status if isinstance(status, str) else "",
        digest=str(obj.get("digest") or ""),
        total=_int(obj.get("total")),
        completed=_int(obj.get("completed")),
    )


def progress_to_wire(p: PullProgress) -> JSONObject:
    """As Ollama sends it: the byte counts only once they say something."""
    out: JSONObject = {"status": p.status}
    if p.digest:
        out["digest"] = p.digest
    if p.total:
        out["total"] = p.total
    if p.completed:
        out["completed"] = p.completed
    return out


def pull_request_from_wire(body: object) -> PullRequest:
    obj = body_object(body)
    model = require_model(obj, "model", "name")
    check_name(model)
    stream = opt_bool(obj, "stream")
    return PullRequest(
        model=model,
        insecure=bool(opt_bool(obj, "insecure")),
        stream=True if stream is None else stream,
    )


def delete_request_from_wire(body: object) -> str:
    obj = body_object(body)
    model = require_model(obj, "model", "name")
    check_name(model)
    return model


def copy_request_from_wire(body: object) -> tuple[str, str]:
    obj = body_object(body)
    source = opt_str(obj, "source")
    destination = opt_str(obj, "destination")
    if not source:
        raise invalid("source is required", "source")
    if not destination:
        raise invalid("destination is required", "destination")
    for name, field in ((source, "source"), (destination, "destination")):
        try:
            check_name(name)
        except GatewayError:
            raise invalid(f'{field} "{name}" is invalid', field) from None
    return source, destination
