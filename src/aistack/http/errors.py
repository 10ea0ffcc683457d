"""An error as the body each dialect's clients expect (see table.Dialect).

A dialect's issue adds its renderer here; until then its routes answer in the plain
envelope, which is OpenAI's.
"""

from __future__ import annotations

from collections.abc import Callable

import orjson

from aistack.core.errors import ErrorKind, GatewayError
from aistack.dialects.anthropic.convert import error_to_wire as anthropic_error
from aistack.dialects.ollama.convert import error_to_wire as ollama_error
from aistack.dialects.openai.convert import error_to_wire as openai_error
from aistack.dialects.qdrant import error_to_wire as qdrant_error
from aistack.http.asgi import JSON_TYPE, TEXT_TYPE, Request, respond
from aistack.http.table import Dialect

_RENDER: dict[str, Callable[[GatewayError], object]] = {
    "ollama": ollama_error,
    "openai": openai_error,
    "anthropic": anthropic_error,
    "plain": openai_error,
    "qdrant": qdrant_error,
}


def error_body(dialect: Dialect, e: GatewayError) -> bytes:
    return orjson.dumps(_RENDER.get(dialect, openai_error)(e))


async def not_found(req: Request, dialect: Dialect) -> None:
    if dialect == "ollama":
        if req.path == "/api" or req.path.startswith("/api/"):
            # gin's words in Ollama's error shape, which its clients read the message from.
            e = GatewayError(ErrorKind.NOT_FOUND, "404 page not found")
            await respond(req, 404, error_body(dialect, e), JSON_TYPE)
            return
        # Outside every API (a client that puts /chat/completions on the root): gin's
        # plain-text 404, as Ollama answers it, which such clients have learned to spot.
        await respond(req, 404, b"404 page not found", TEXT_TYPE)
        return
    e = GatewayError(ErrorKind.NOT_FOUND, f"Unknown request URL: {req.method} {req.path}")
    await respond(req, 404, error_body(dialect, e), JSON_TYPE)


async def not_allowed(req: Request, dialect: Dialect, allow: bytes) -> None:
    e = GatewayError(
        ErrorKind.METHOD_NOT_ALLOWED,
        f"405 method not allowed: {req.method} {req.path} takes {allow.decode()}",
    )
    await respond(req, 405, error_body(dialect, e), JSON_TYPE, [(b"allow", allow)])
