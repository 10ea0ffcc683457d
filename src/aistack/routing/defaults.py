"""Per-model request defaults (`routing.models.<name>.defaults`), set on the core request.

Every dialect decodes into the same core request before the service routes it, so a
default set here reaches the backend whichever API the client spoke (Ollama, OpenAI,
Anthropic, Responses). A field the client left out takes the default; a field it set
keeps its value unless `force: true`, which makes the defaults win. A `system` default
is a system message for requests without one; forced, it goes before the client's own
system message (both apply). Backend `options` merge key by key the same way.

Prepared once per route (`Defaults.of`), so a request pays a few attribute reads and
one `replace` when a model has defaults, and nothing when it has none.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, TypeVar

from msgspec.structs import replace

from aistack.config import ModelDefaults
from aistack.core.chat import ChatRequest, EmbedRequest, GenerateRequest, Message, Sampling

_SAMPLING = tuple(Sampling.__struct_fields__)

R = TypeVar("R", ChatRequest, GenerateRequest)


@dataclass(frozen=True, slots=True)
class Defaults:
    sampling: tuple[tuple[str, Any], ...]  # Sampling field -> value
    think: Any = None
    keep_alive: float | str | None = None
    system: str | None = None
    options: tuple[tuple[str, Any], ...] = ()
    force: bool = False

    @classmethod
    def of(cls, d: ModelDefaults | None, force: bool) -> Defaults | None:
        if d is None:
            return None
        sampling = []
        for name in _SAMPLING:
            v = getattr(d, name, None)
            if v is not None:
                sampling.append((name, tuple(v) if isinstance(v, list) else v))
        return cls(
            tuple(sampling),
            d.think,
            d.keep_alive,
            d.system or None,
            tuple(d.options.items()),
            force,
        )

    def _sampling(self, s: Sampling) -> Sampling:
        force = self.force
        changes = {k: v for k, v in self.sampling if force or getattr(s, k) is None}
        return replace(s, **changes) if changes else s

    def _options(self, given: dict[str, Any]) -> dict[str, Any]:
        if not self.options:
            return given
        merged = dict(given)
        for k, v in self.options:
            if self.force or k not in merged:
                merged[k] = v
        return merged

    def _common(self, req: R) -> dict[str, Any]:
        force = self.force
        changes: dict[str, Any] = {}
        sampling = self._sampling(req.sampling)
        if sampling is not req.sampling:
            changes["sampling"] = sampling
        options = self._options(req.options)
        if options is not req.options:
            changes["options"] = options
        if self.think is not None and (force or req.think is None):
            changes["think"] = self.think
        if self.keep_alive is not None and (force or req.keep_alive is None):
            changes["keep_alive"] = self.keep_alive
        return changes

    def chat(self, req: ChatRequest) -> ChatRequest:
        changes = self._common(req)
        if self.system is not None and req.messages:
            msgs = req.messages
            first = next((i for i, m in enumerate(msgs) if m.role == "system"), None)
            if first is None:
                changes["messages"] = (Message(role="system", content=self.system), *msgs)
            elif self.force:
                m = msgs[first]
                joined = replace(m, content=f"{self.system}\n\n{m.content}")
                changes["messages"] = (*msgs[:first], joined, *msgs[first + 1 :])
        return replace(req, **changes) if changes else req

    def generate(self, req: GenerateRequest) -> GenerateRequest:
        changes = self._common(req)
        if self.system is not None and not req.raw:
            if not req.system:
                changes["system"] = self.system
            elif self.force:
                changes["system"] = f"{self.system}\n\n{req.system}"
        return replace(req, **changes) if changes else req

    def embed(self, req: EmbedRequest) -> EmbedRequest:
        changes: dict[str, Any] = {}
        options = self._options(req.options)
        num_ctx = next((v for k, v in self.sampling if k == "num_ctx"), None)
        if num_ctx is not None and (self.force or "num_ctx" not in options):
            options = {**options, "num_ctx": num_ctx}
        if options is not req.options:
            changes["options"] = options
        if self.keep_alive is not None and (self.force or req.keep_alive is None):
            changes["keep_alive"] = self.keep_alive
        return replace(req, **changes) if changes else req
