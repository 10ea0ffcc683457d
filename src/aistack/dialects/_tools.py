"""Tools and tool calls: the wire shapes both dialects share.

A tool, `{"type": "function", "function": {"name", "description", "parameters"}}`, is
the same in Ollama's and OpenAI's APIs. A call in a message history is too, but for its
arguments: an object in Ollama's, a JSON string in OpenAI's; either is read here (clients
send both to both), and each dialect writes its own form.
"""

from __future__ import annotations

from aistack.core.chat import JSONObject, Tool, ToolCall
from aistack.core.errors import invalid
from aistack.dialects._fields import (
    item_obj,
    opt_int,
    opt_obj,
    opt_str,
    parse_arguments,
    wrong_type,
)

# Some servers reject a function without parameters; an empty object schema is "none".
NO_PARAMETERS: JSONObject = {"type": "object", "properties": {}}


def tools_from_wire(v: object) -> tuple[Tool, ...]:
    if v is None:
        return ()
    if not isinstance(v, list):
        raise wrong_type("tools", "an array", v)
    tools: list[Tool] = []
    for i, raw in enumerate(v):
        p = f"tools[{i}]"
        t = item_obj(raw, p)
        if t.get("type", "function") != "function":
            raise invalid(f"unsupported tool type {t.get('type')!r} in '{p}'", "tools")
        fn = item_obj(t.get("function"), f"{p}.function")
        name = opt_str(fn, "name", f"{p}.function.name")
        if not name:
            raise invalid(f"'{p}.function.name' is required", f"{p}.function.name")
        tools.append(
            Tool(
                name=name,
                description=opt_str(fn, "description", f"{p}.function.description") or "",
                parameters=opt_obj(fn, "parameters", f"{p}.function.parameters") or {},
            )
        )
    return tuple(tools)


def tools_to_wire(tools: tuple[Tool, ...]) -> list[JSONObject]:
    return [
        {
            "type": "function",
            "function": {
                "name": t.name,
                "description": t.description,
                "parameters": t.parameters or NO_PARAMETERS,
            },
        }
        for t in tools
    ]


def tool_calls_from_wire(v: object, path: str) -> tuple[ToolCall, ...]:
    if v is None:
        return ()
    if not isinstance(v, list):
        raise wrong_type(path, "an array", v)
    calls: list[ToolCall] = []
    for i, raw in enumerate(v):
        p = f"{path}[{i}]"
        tc = item_obj(raw, p)
        fn = item_obj(tc.get("function"), f"{p}.function")
        args: object = fn.get("arguments")
        if args is None:
            args = {}
        elif isinstance(args, str):
            args = parse_arguments(args, f"{p}.function.arguments")
        if not isinstance(args, dict):
            raise wrong_type(f"{p}.function.arguments", "a JSON object", args)
        index = opt_int(fn, "index", f"{p}.function.index")
        calls.append(
            ToolCall(
                name=opt_str(fn, "name", f"{p}.function.name") or "",
                arguments=args,
                id=opt_str(tc, "id", f"{p}.id") or "",
                index=i if index is None else index,
            )
        )
    return tuple(calls)
