"""Golden wire files: every converter, both directions, streaming sequences included.

Each file in tests/golden/<dialect>/ names a converter, an input, and the expected
output, compared as whole values. Core values are written as plain JSON (dataclass
fields). To accept a deliberate change: `UPDATE_GOLDEN=1 pytest tests/test_golden.py`,
then read the diff.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import msgspec
import orjson
import pytest

from aistack.core.chat import ChatRequest, GenerateRequest
from aistack.core.errors import ErrorKind, GatewayError
from aistack.core.events import Chunk
from aistack.dialects.anthropic import convert as an
from aistack.dialects.anthropic import stream as an_stream
from aistack.dialects.ollama import convert as ol
from aistack.dialects.ollama import stream as ol_stream
from aistack.dialects.openai import convert as oa
from aistack.dialects.openai import responses as rs
from aistack.dialects.openai import responses_stream as rs_stream
from aistack.dialects.openai import stream as oa_stream

GOLDEN = Path(__file__).parent / "golden"


def core(v: object) -> Any:
    return msgspec.to_builtins(v)


def chunks(v: list[dict[str, Any]]) -> list[Chunk]:
    return [msgspec.convert(c, Chunk) for c in v]


def _ollama_stream(inp: dict[str, Any]) -> list[Any]:
    enc = ol_stream.StreamEncoder(inp["model"], inp.get("kind", "chat"))
    lines: list[Any] = []
    for c in chunks(inp["chunks"]):
        for line in enc.encode(c).splitlines():
            obj = orjson.loads(line)
            obj["created_at"] = "<time>"
            lines.append(obj)
    return lines


def _ollama_decode(inp: list[dict[str, Any]]) -> list[Any]:
    return [core(ol.chunk_from_wire(line)) for line in inp]


def _openai_stream(inp: dict[str, Any]) -> list[Any]:
    enc = oa_stream.StreamEncoder(
        inp["model"], "chatcmpl-1", 1700000000, inp.get("include_usage", False), inp["kind"]
    )
    raw = b"".join(enc.encode(c) for c in chunks(inp["chunks"]))
    events: list[Any] = []
    for block in raw.split(b"\n\n"):
        if block:
            assert block.startswith(b"data: ")
            data = block[6:]
            events.append("[DONE]" if data == b"[DONE]" else orjson.loads(data))
    return events


def _openai_decode(inp: dict[str, Any]) -> list[Any]:
    dec = oa_stream.StreamDecoder("b", inp.get("kind", "chat"))
    out: list[Any] = []
    for ev in inp["events"]:
        c = dec.feed(ev)
        if c is not None:
            out.append(core(c))
    out.append(core(dec.end()))
    return out


def _sse(raw: bytes) -> list[Any]:
    """`event:`/`data:` pairs as [event, data] (ids the encoders mint made stable)."""
    events: list[Any] = []
    for block in raw.split(b"\n\n"):
        if block:
            name, data = block.split(b"\n", 1)
            assert name.startswith(b"event: ") and data.startswith(b"data: ")
            events.append([name[7:].decode(), _stable(orjson.loads(data[6:]))])
    return events


_MINTED = re.compile(r"^[a-z]+[_-][0-9a-f]{20}$")


def _stable(v: Any) -> Any:
    """Minted ids (`toolu_<random><counter>`) as `<id>`, so the files do not change."""
    if isinstance(v, dict):
        return {k: _stable(x) for k, x in v.items()}
    if isinstance(v, list):
        return [_stable(x) for x in v]
    if isinstance(v, str) and _MINTED.match(v):
        return "<id>"
    return v


def _anthropic_stream(inp: dict[str, Any]) -> list[Any]:
    enc = an_stream.StreamEncoder(inp["model"], "msg_1", inp.get("input_tokens", 0))
    return _sse(b"".join(enc.encode(c) for c in chunks(inp["chunks"])))


def _anthropic_decode(inp: list[list[Any]]) -> list[Any]:
    dec = an_stream.StreamDecoder("b")
    out: list[Any] = []
    for name, data in inp:
        c = dec.feed(name, data)
        if c is not None:
            out.append(core(c))
    return out


def _responses_call(inp: dict[str, Any]) -> Any:
    return _stable(core(rs.call_from_wire(inp)))


def _responses_base(inp: dict[str, Any]) -> dict[str, Any]:
    return rs.response_base(rs.call_from_wire(inp["request"]), "resp_1", inp["model"], 1700000000)


def _responses_stream(inp: dict[str, Any]) -> list[Any]:
    enc = rs_stream.StreamEncoder(_responses_base(inp))
    return _sse(b"".join(enc.encode(c) for c in chunks(inp["chunks"])))


def _error(e: dict[str, Any]) -> GatewayError:
    return GatewayError(ErrorKind[e["kind"]], e["message"], param=e.get("param"))


CONVERTERS: dict[str, Callable[[Any], Any]] = {
    # Ollama, server side
    "ollama.chat_request_from_wire": lambda i: core(ol.chat_request_from_wire(i)),
    "ollama.generate_request_from_wire": lambda i: core(ol.generate_request_from_wire(i)),
    "ollama.embed_request_from_wire": lambda i: core(ol.embed_request_from_wire(i)),
    "ollama.chat_response_to_wire": lambda i: ol.chat_response_to_wire(
        msgspec.convert(i["chunk"], Chunk), i["model"], "2025-01-01T00:00:00Z"
    ),
    "ollama.generate_response_to_wire": lambda i: ol.generate_response_to_wire(
        msgspec.convert(i["chunk"], Chunk), i["model"], "2025-01-01T00:00:00Z"
    ),
    "ollama.stream": _ollama_stream,
    "ollama.error_to_wire": lambda i: ol.error_to_wire(_error(i)),
    # Ollama, client side
    "ollama.chat_request_to_wire": lambda i: ol.chat_request_to_wire(
        msgspec.convert(i["request"], ChatRequest), i["model"], i["stream"]
    ),
    "ollama.generate_request_to_wire": lambda i: ol.generate_request_to_wire(
        msgspec.convert(i["request"], GenerateRequest), i["model"], i["stream"]
    ),
    "ollama.decode_stream": _ollama_decode,
    # OpenAI, server side
    "openai.chat_request_from_wire": lambda i: core(oa.chat_request_from_wire(i)),
    "openai.completion_request_from_wire": lambda i: core(oa.completion_request_from_wire(i)),
    "openai.embed_request_from_wire": lambda i: core(oa.embed_request_from_wire(i)),
    "openai.chat_response_to_wire": lambda i: oa.chat_response_to_wire(
        msgspec.convert(i["chunk"], Chunk), i["model"], "chatcmpl-1", 1700000000
    ),
    "openai.completion_response_to_wire": lambda i: oa.completion_response_to_wire(
        msgspec.convert(i["chunk"], Chunk), i["model"], "cmpl-1", 1700000000
    ),
    "openai.stream": _openai_stream,
    "openai.error_to_wire": lambda i: oa.error_to_wire(_error(i)),
    # OpenAI, client side
    "openai.chat_request_to_wire": lambda i: oa.chat_request_to_wire(
        msgspec.convert(i["request"], ChatRequest), i["model"], i["stream"]
    ),
    "openai.completion_request_to_wire": lambda i: oa.completion_request_to_wire(
        msgspec.convert(i["request"], GenerateRequest), i["model"], i["stream"]
    ),
    "openai.chat_chunk_from_response": lambda i: core(oa.chat_chunk_from_response(i)),
    "openai.decode_stream": _openai_decode,
    # Anthropic, server side
    "anthropic.request_from_wire": lambda i: core(
        an.request_from_wire(i, strip_system=("x-anthropic-billing-header:",))
    ),
    "anthropic.message_to_wire": lambda i: _stable(
        an.message_to_wire(msgspec.convert(i["chunk"], Chunk), i["model"], "msg_1")
    ),
    "anthropic.stream": _anthropic_stream,
    "anthropic.error_to_wire": lambda i: an.error_to_wire(_error(i)),
    # Anthropic, client side
    "anthropic.request_to_wire": lambda i: an.request_to_wire(
        msgspec.convert(i["request"], ChatRequest), i["model"], i["stream"]
    ),
    "anthropic.chunk_from_message": lambda i: core(an.chunk_from_message(i)),
    "anthropic.decode_stream": _anthropic_decode,
    # OpenAI Responses, server side
    "responses.call_from_wire": _responses_call,
    "responses.response_to_wire": lambda i: _stable(
        rs.response_to_wire(_responses_base(i), msgspec.convert(i["chunk"], Chunk))
    ),
    "responses.stream": _responses_stream,
}

FILES = sorted(GOLDEN.glob("*/*.json"))


def test_every_converter_has_a_golden_file() -> None:
    used = {orjson.loads(f.read_bytes())["converter"] for f in FILES}
    assert set(CONVERTERS) - used == set()


@pytest.mark.parametrize("path", FILES, ids=[f"{f.parent.name}/{f.stem}" for f in FILES])
def test_golden(path: Path) -> None:
    case = orjson.loads(path.read_bytes())
    got = CONVERTERS[case["converter"]](case["input"])
    got = orjson.loads(orjson.dumps(got))  # tuples -> lists, as in the file
    if os.environ.get("UPDATE_GOLDEN"):
        case["expected"] = got
        path.write_bytes(orjson.dumps(case, option=orjson.OPT_INDENT_2) + b"\n")
    assert got == case["expected"]
