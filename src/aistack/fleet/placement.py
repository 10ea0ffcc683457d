"""Which instance a pull, delete or copy goes to, when the caller does not say.

The rule, in order (docs/fleet.md):

1. The backend the caller names (`--instance` on the command line; the
   `X-Aistack-Backend` header or `?backend=` on the gateway). It must be able to manage
   models (an Ollama backend); otherwise the answer says why not.
2. pull: the first Ollama backend whose `models:` declares the model, else the first
   that already has it (a re-pull updates it), else the first Ollama backend in the
   config.
3. delete: the one Ollama backend that has the model. If several have it, nothing is
   deleted and the answer (409) names them: deleting from every box at once is too
   easy a mistake to make on a guess.
4. copy: the first Ollama backend that has the source (one that declares it first).

Aliases resolve first, so `aistack models pull reason` pulls what `reason` points at.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from typing import Literal

from aistack.backends.base import Backend, manages_models
from aistack.core.errors import ErrorKind, GatewayError, invalid
from aistack.core.models import canonical

Action = Literal["pull", "delete", "copy"]


def resolve_alias(name: str, aliases: Mapping[str, str]) -> str:
    """The model an alias points at (aliases may chain), or the name itself."""
    table = {canonical(a): t for a, t in aliases.items()}
    out, key = name, canonical(name)
    for _ in range(8):  # a loop in the config cannot hang us
        target = table.get(key)
        if target is None:
            break
        out, key = target, canonical(target)
    return out


def managed(backends: Sequence[Backend]) -> list[Backend]:
    return [b for b in backends if manages_models(b)]


def _none_can(action: Action, backends: Sequence[Backend]) -> GatewayError:
    kinds = ", ".join(f"{b.name} ({b.kind})" for b in backends) or "none configured"
    return invalid(f"no backend can {action} models: only Ollama backends can (backends: {kinds})")


def explicit_backend(action: Action, name: str, backends: Sequence[Backend]) -> Backend:
    for b in backends:
        if b.name == name:
            if not manages_models(b):
                raise b.cannot(action)
            return b
    names = ", ".join(b.name for b in backends) or "none"
    raise invalid(f"no backend named '{name}' (backends: {names})", "backend")


def choose(
    action: Action,
    model: str,
    backends: Sequence[Backend],
    *,
    explicit: str | None = None,
    declared: Mapping[str, Sequence[str]] | None = None,
    present: Mapping[str, Collection[str]] | None = None,
) -> Backend:
    """The backend to act on. `present` maps backend names to the canonical names it has."""
    if explicit:
        return explicit_backend(action, explicit, backends)
    pool = managed(backends)
    if not pool:
        raise _none_can(action, backends)
    key = canonical(model)
    declaring = [
        b for b in pool if any(canonical(m) == key for m in (declared or {}).get(b.name, ()))
    ]
    having = [b for b in pool if key in (present or {}).get(b.name, ())]
    if action == "pull":
        return (declaring or having or pool)[0]
    if action == "delete":
        if len(having) > 1:
            names = ", ".join(b.name for b in having)
            raise GatewayError(
                ErrorKind.CONFLICT,
                f"model '{model}' is on several backends ({names}); say which one "
                "(--instance NAME, or the X-Aistack-Backend header)",
                param="model",
            )
        if having:
            return having[0]
    else:  # copy
        ordered = [b for b in declaring if b in having] + having
        if ordered:
            return ordered[0]
    raise GatewayError(
        ErrorKind.NOT_FOUND,
        f"model '{model}' not found on any Ollama backend",
        param="model",
        code="model_not_found",
    )
