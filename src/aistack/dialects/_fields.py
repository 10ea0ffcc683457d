"""Small typed readers for wire objects that say exactly which field is wrong and why.

Lenient about what real clients send (unknown keys, `null` for "not set", an integer
where a float is expected) and strict about what cannot be honoured (a string where a
list is needed). Every failure is a 400 naming the field.

Numbers are bounded where they are read: JSON has no integer size, so `1e30` or a
twenty-digit literal is an "integer" to a lenient reader, and no backend (and no JSON
encoder) takes one beyond 64 bits. An integer field outside the signed 64-bit range is
a 400 naming it, before anything is sent anywhere. Nesting is bounded too (`MAX_DEPTH`
levels of objects and arrays in a whole body): the JSON encoder that forwards a request
stops at 255, and a schema 300 levels deep is nobody's real format.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from aistack.core.errors import GatewayError, invalid

_TYPE_NAMES = {
    str: "string",
    bool: "boolean",
    int: "integer",
    float: "number",
    list: "array",
    dict: "object",
    type(None): "null",
}


def type_name(value: object) -> str:
    return _TYPE_NAMES.get(type(value), type(value).__name__)


def wrong_type(path: str, expected: str, value: object) -> GatewayError:
    return invalid(f"invalid type for '{path}': expected {expected}, got {type_name(value)}", path)


# Levels of objects and arrays a request body may nest, the body itself counting as
# one: a JSON schema in `response_format.json_schema.schema` starts at level 4.
MAX_DEPTH = 64

INT_MIN = -(2**63)
INT_MAX = 2**63 - 1


def body_object(body: object) -> dict[str, Any]:
    """The request body as an object, nested at most `MAX_DEPTH` levels."""
    if not isinstance(body, dict):
        raise invalid(f"invalid request body: expected a JSON object, got {type_name(body)}")
    check_depth(body)
    return body


def check_depth(body: Mapping[str, Any], limit: int = MAX_DEPTH) -> None:
    """A 400 naming the top-level field that nests deeper than `limit` levels (the body
    itself is the first)."""
    for key, v in body.items():
        t = type(v)
        if (t is dict or t is list) and _deeper(v, limit - 2):
            raise invalid(
                f"invalid value for '{key}': nested too deeply (a request's JSON may nest "
                f"at most {limit} levels of objects and arrays)",
                key,
            )


def _deeper(v: Any, budget: int) -> bool:
    """Whether `v` (an object or an array) holds containers more than `budget` levels
    below it."""
    for x in v.values() if type(v) is dict else v:
        t = type(x)
        if (t is dict or t is list) and (budget <= 0 or _deeper(x, budget - 1)):
            return True
    return False


def _number_text(v: int | float) -> str:
    return repr(v) if isinstance(v, float) or abs(v) < 10**30 else f"{float(v):g}"


def out_of_range(
    path: str, v: int | float, low: int = INT_MIN, high: int = INT_MAX
) -> GatewayError:
    return invalid(
        f"invalid value for '{path}': {_number_text(v)} is out of range "
        f"(expected an integer from {low} to {high})",
        path,
    )


def bounded_int(v: object, path: str, low: int = INT_MIN, high: int = INT_MAX) -> int:
    """An integer (or an integral float, as some clients send `1.0`) within [low, high]."""
    if isinstance(v, bool):
        raise wrong_type(path, "an integer", v)
    if isinstance(v, int):
        if low <= v <= high:
            return v
        raise out_of_range(path, v, low, high)
    if isinstance(v, float) and v.is_integer():
        if low <= v <= high:
            return int(v)
        raise out_of_range(path, v, low, high)
    raise wrong_type(path, "an integer", v)


def as_int(v: object) -> int:
    """A count a backend sent: an integer (or a float), anything else 0."""
    if isinstance(v, bool):
        return 0
    if isinstance(v, int):
        return v
    if isinstance(v, float):
        return int(v)
    return 0


def opt_str(obj: Mapping[str, Any], key: str, path: str = "") -> str | None:
    v = obj.get(key)
    if v is None or isinstance(v, str):
        return v
    raise wrong_type(path or key, "a string", v)


def opt_bool(obj: Mapping[str, Any], key: str, path: str = "") -> bool | None:
    v = obj.get(key)
    if v is None or isinstance(v, bool):
        return v
    raise wrong_type(path or key, "a boolean", v)


def opt_int(
    obj: Mapping[str, Any], key: str, path: str = "", low: int = INT_MIN, high: int = INT_MAX
) -> int | None:
    """An optional integer field within [low, high] (signed 64 bits unless told)."""
    v = obj.get(key)
    if v is None:
        return None
    return bounded_int(v, path or key, low, high)


def opt_float(obj: Mapping[str, Any], key: str, path: str = "") -> float | None:
    v = obj.get(key)
    if v is None:
        return None
    if isinstance(v, bool) or not isinstance(v, int | float):
        raise wrong_type(path or key, "a number", v)
    f = float(v)
    if not math.isfinite(f):
        raise invalid(
            f"invalid value for '{path or key}': {v!r} is not a finite number", path or key
        )
    return f


def opt_list(obj: Mapping[str, Any], key: str, path: str = "") -> list[Any] | None:
    v = obj.get(key)
    if v is None or isinstance(v, list):
        return v
    raise wrong_type(path or key, "an array", v)


def opt_obj(obj: Mapping[str, Any], key: str, path: str = "") -> dict[str, Any] | None:
    v = obj.get(key)
    if v is None or isinstance(v, dict):
        return v
    raise wrong_type(path or key, "an object", v)


def item_obj(v: object, path: str) -> dict[str, Any]:
    if isinstance(v, dict):
        return v
    raise wrong_type(path, "an object", v)


def str_list(v: object, path: str) -> tuple[str, ...]:
    """A string or an array of strings, as a tuple (OpenAI's `stop` takes either)."""
    if isinstance(v, str):
        return (v,)
    if isinstance(v, list) and all(isinstance(s, str) for s in v):
        return tuple(v)
    raise wrong_type(path, "a string or an array of strings", v)


def require_model(obj: Mapping[str, Any], *keys: str) -> str:
    """The model name, required and non-empty; `keys` are tried in order (legacy `name`)."""
    for key in keys or ("model",):
        v = obj.get(key)
        if v is None or v == "":
            continue
        if not isinstance(v, str):
            raise wrong_type(key, "a string", v)
        return v
    raise invalid("model is required", "model")


def parse_arguments(s: str, path: str) -> object:
    """OpenAI tool-call arguments are a JSON string; the core wants the object inside."""
    import orjson

    if not s.strip():
        return {}
    try:
        return orjson.loads(s)
    except orjson.JSONDecodeError:
        raise invalid(f"invalid tool call arguments in '{path}': not valid JSON", path) from None
