"""JSON formats and schemas for the embedded engine: the grammar that constrains its
output, checked as llama.cpp will read it, and the check of an answer against its schema.

llama.cpp takes bad input badly: a grammar it cannot parse is a NULL sampler (a crash at
the first token), a grammar nested thousands deep overflows its parser's stack. So a
schema the converter refuses, or llama.cpp cannot parse, is a 400 naming the field.
"""

from __future__ import annotations

import logging
import math
import re
from typing import Any

import orjson

from aistack.core.errors import invalid

log = logging.getLogger("aistack.local")

# llama-cpp-python's JSON-schema grammar lets a string hold any character but `"` and
# `\`, raw newlines and other control characters included, and a pattern's `.` any but
# CR and LF: both give invalid JSON. These are JSON's own string characters.
_JSON_CHAR = r'char ::= [^"\\\x7F\x00-\x1F] | "\\" (["\\/bfnrt] | "u" [0-9a-fA-F]{4})'
_JSON_DOT = r'dot ::= [^"\\\x7F\x00-\x1F]'
_RULE_LINE = re.compile(r"^(char|dot) ::= .*$", re.MULTILINE)
# llama.cpp's grammar parser recurses per group: a schema's `maxLength: 20000` nests
# 20000 deep and overflowed its stack (3000 parsed). Nesting and size are bounded well
# below that.
_GRAMMAR_MAX_NESTING = 1000
_GRAMMAR_MAX_CHARS = 1 << 20
# Quoted literals and character classes, where parentheses are not groups.
_GRAMMAR_LITERALS = re.compile(r'"(?:\\.|[^"\\])*"|\[(?:\\.|[^\]\\])*\]')


def grammar(llm: Any, schema: dict[str, Any] | str | None, where: str) -> Any:
    """The grammar for a JSON format (`"json"`) or schema, checked as llama.cpp will
    read it; a schema it cannot use is the caller's 400 naming `where`."""
    from llama_cpp.llama_grammar import JSON_GBNF, LlamaGrammar, json_schema_to_gbnf

    if schema is None:
        return None
    if schema == "json":
        return LlamaGrammar.from_string(JSON_GBNF, verbose=False)
    try:
        text = json_schema_to_gbnf(orjson.dumps(_enforceable(schema)).decode())
    except Exception as e:  # the converter says "cannot" by raising
        reason = str(e).strip() or type(e).__name__
        raise invalid(
            f"invalid JSON schema in '{where}' for the embedded engine: {reason[:200]}",
            where,
        ) from None
    text = _RULE_LINE.sub(lambda m: _JSON_CHAR if m.group(1) == "char" else _JSON_DOT, text)
    if len(text) > _GRAMMAR_MAX_CHARS or _nesting(text) > _GRAMMAR_MAX_NESTING:
        raise invalid(
            f"invalid JSON schema in '{where}' for the embedded engine: too complex "
            f"(its grammar nests more than {_GRAMMAR_MAX_NESTING} groups deep or is "
            "over 1 MiB; lower maxLength, maxItems or repetition counts)",
            where,
        )
    import llama_cpp

    # llama.cpp answers a grammar it cannot parse with NULL, which a sampler chain
    # would take and crash on: try it here, and free it.
    sampler = llama_cpp.llama_sampler_init_grammar(llm._model.vocab, text.encode(), b"root")
    if not sampler:
        raise invalid(
            f"invalid JSON schema in '{where}' for the embedded engine: "
            "it admits no JSON value the engine can produce",
            where,
        )
    llama_cpp.llama_sampler_free(sampler)
    return LlamaGrammar.from_string(text, verbose=False)


def matches(text: str, schema: dict[str, Any] | str | None) -> bool:
    """Whether a JSON answer parses and (for a schema) matches it: the grammar enforces
    most of a schema, not all (numbers' bounds, uniqueItems, multipleOf, ...)."""
    try:
        value = orjson.loads(text)
    except orjson.JSONDecodeError:
        return False
    if not isinstance(schema, dict):
        return True
    from jsonschema.validators import validator_for  # type: ignore[import-untyped]

    try:
        return bool(validator_for(schema)(schema).is_valid(value))
    except Exception:  # a schema jsonschema cannot read, though the converter could
        log.warning("cannot check an answer against its schema", exc_info=True)
        return True


# An integer range this wide or narrower is enforced by the grammar as an enum of its
# values (the converter ignores minimum and maximum).
_ENUM_SPAN = 256


def _enforceable(schema: Any) -> Any:
    """The schema with small integer ranges spelled as enums, which the grammar keeps."""
    if isinstance(schema, list):
        return [_enforceable(x) for x in schema]
    if not isinstance(schema, dict):
        return schema
    out = {k: v if k in _LITERALS else _enforceable(v) for k, v in schema.items()}
    if out.get("type") != "integer" or "enum" in out or "const" in out:
        return out
    low = _bound(out.get("minimum"), out.get("exclusiveMinimum"), 1)
    high = _bound(out.get("maximum"), out.get("exclusiveMaximum"), -1)
    if low is None or high is None:
        return out
    first, last = low, high
    if first > last or last - first > _ENUM_SPAN:
        return out  # nothing fits (the checker says so), or too many to list
    return {k: v for k, v in out.items() if k not in _RANGE_KEYS} | {
        "enum": list(range(first, last + 1))
    }


_RANGE_KEYS = {"type", "minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum"}
_LITERALS = {"enum", "const", "default", "examples"}  # values, not schemas


def _bound(inclusive: object, exclusive: object, side: int) -> int | None:
    """The lowest (side 1) or highest (side -1) integer a range allows, if bounded."""
    found: list[int] = []
    for v, strict in ((inclusive, False), (exclusive, True)):
        if isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v):
            if side > 0:
                found.append(math.floor(v) + 1 if strict else math.ceil(v))
            else:
                found.append(math.ceil(v) - 1 if strict else math.floor(v))
    if not found:
        return None
    return max(found) if side > 0 else min(found)


def _nesting(grammar: str) -> int:
    """How deep a GBNF grammar's groups nest (outside literals and character classes)."""
    depth = deepest = 0
    for c in re.sub(_GRAMMAR_LITERALS, "", grammar):
        if c == "(":
            depth += 1
            deepest = max(deepest, depth)
        elif c == ")":
            depth -= 1
    return deepest
