"""Small typed readers for wire objects that say exactly which field is wrong and why.

Lenient about what real clients send (unknown keys, `null` for "not set", an integer
where a float is expected) and strict about what cannot be honoured (a string where a
list is needed). Every failure is a 400 naming the field.
"""

from __future__ import annotations

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


def body_object(body: object) -> dict[str, Any]:
    if not isinstance(body, dict):
        raise invalid(f"invalid request body: expected a JSON object, got {type_name(body)}")
    return body


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


def opt_int(obj: Mapping[str, Any], key: str, path: str = "") -> int | None:
    v = obj.get(key)
    if v is None:
        return None
    if isinstance(v, bool):
        raise wrong_type(path or key, "an integer", v)
    if isinstance(v, int):
        return v
    if isinstance(v, float) and v.is_integer():
        return int(v)
    raise wrong_type(path or key, "an integer", v)


def opt_float(obj: Mapping[str, Any], key: str, path: str = "") -> float | None:
    v = obj.get(key)
    if v is None:
        return None
    if isinstance(v, bool) or not isinstance(v, int | float):
        raise wrong_type(path or key, "a number", v)
    return float(v)


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
