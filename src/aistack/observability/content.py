"""Prompts and answers of recent requests, for the console's request detail view
(GET /admin/api/content).

Kept only when `tracing.capture_content` is on (they can hold anything a user typed),
in memory, for the newest `size` model requests of this replica; never written to the
database. An observer of finished requests: a dict insert per request.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Any

from aistack.core.operations import Operation
from aistack.service import RequestContext

MAX_CHARS = 20_000  # per message, so a huge prompt cannot fill the memory


def _cut(s: str) -> str:
    return s if len(s) <= MAX_CHARS else s[:MAX_CHARS] + f"… ({len(s) - MAX_CHARS} more)"


def messages_of(request: object) -> list[dict[str, Any]]:
    """The prompt as role and text (images counted, not kept)."""
    messages = getattr(request, "messages", None)
    if messages is not None:
        out = []
        for m in messages:
            d: dict[str, Any] = {"role": m.role, "content": _cut(m.content)}
            if getattr(m, "images", None):
                d["images"] = len(m.images)
            out.append(d)
        return out
    prompt = getattr(request, "prompt", None)
    if prompt is not None:
        out = []
        system = getattr(request, "system", "")
        if system:
            out.append({"role": "system", "content": _cut(system)})
        out.append({"role": "user", "content": _cut(prompt)})
        return out
    inputs = getattr(request, "inputs", None)
    return [{"role": "input", "content": _cut(str(i))} for i in inputs or ()]


class ContentLog:
    def __init__(self, size: int = 500) -> None:
        self.size = size
        self._items: OrderedDict[str, dict[str, Any]] = OrderedDict()

    def observe(self, ctx: RequestContext) -> None:
        if not ctx.capture or ctx.operation is Operation.NONE or not ctx.request_id:
            return
        self._items[ctx.request_id] = {
            "request": ctx.request,
            "output": ctx.output,
        }
        if len(self._items) > self.size:
            self._items.popitem(last=False)

    def get(self, request_id: str) -> dict[str, Any] | None:
        """Rendered lazily: the request path only keeps references."""
        item = self._items.get(request_id)
        if item is None:
            return None
        return {
            "messages": messages_of(item["request"]),
            "answer": _cut("".join(item["output"] or ())),
        }
