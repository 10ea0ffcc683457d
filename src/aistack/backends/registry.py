"""The backend kinds, and backends built from their config entries.

A kind is declared in its own module (its config schema, its class, `KIND`) and
listed here, once: config/loading.py validates each `backends:` entry with its kind's
schema, `build` makes the backend. See docs/architecture.md, "Add a backend kind".
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from aistack.backends import anthropic, comfyui, local, ollama, openai_compat
from aistack.backends.base import Backend, BackendConfig, Kind
from aistack.backends.transport import HttpClient

KINDS: dict[str, Kind[Any]] = {
    k.name: k for k in (ollama.KIND, openai_compat.KIND, local.KIND, anthropic.KIND, comfyui.KIND)
}


def build(configs: Sequence[BackendConfig], client: HttpClient) -> list[Backend]:
    """Each entry's backend; nothing connects until started. An entry must have been
    validated by its kind's schema (config.parse does it)."""
    out = []
    for c in configs:
        kind = KINDS[c.kind]
        if not isinstance(c, kind.config):
            raise TypeError(f"backend '{c.name}': a {type(c).__name__}, not {kind.config}")
        out.append(kind.build(c, client))
    return out
