"""Model names and the facts the gateway lists about models.

Names follow Ollama's grammar, `[host/][namespace/]model[:tag]`: the tag defaults to
`latest`, the default host and namespace (`registry.ollama.ai/library/`) are dropped,
and names compare case-insensitively. `canonical()` gives the one form used as a key;
responses still echo the name the caller sent.
"""

from __future__ import annotations

import difflib
import re
from typing import Any

import msgspec

from aistack.core.errors import invalid

_DEFAULT_PREFIXES = ("registry.ollama.ai/library/", "registry.ollama.ai/", "library/")
# Each part starts with an alphanumeric or underscore; the tag allows '.', '-', '_'.
_PART = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.\-]*$")


def split_tag(name: str) -> tuple[str, str]:
    """`ns/model:tag` -> (`ns/model`, `tag`); a ':' before the last '/' is a host port."""
    slash = name.rfind("/")
    colon = name.rfind(":")
    if colon > slash:
        return name[:colon], name[colon + 1 :]
    return name, ""


def canonical(name: str) -> str:
    """The key form of a model name: lower case, default prefixes dropped, tag explicit."""
    n = name.strip().lower()
    for prefix in _DEFAULT_PREFIXES:
        if n.startswith(prefix):
            n = n[len(prefix) :]
            break
    base, tag = split_tag(n)
    return f"{base}:{tag or 'latest'}"


def check_name(name: str) -> None:
    """Reject names Ollama calls invalid (an empty part, a stray character)."""
    base, tag = split_tag(name.strip())
    if ":" in name and not tag and name.rfind(":") > name.rfind("/"):
        raise invalid("invalid model name", param="model")
    parts = [p for p in base.split("/")]
    if not base or any(not p for p in parts[1:]) or not _PART.match(parts[-1]):
        raise invalid("invalid model name", param="model")
    if tag and not _PART.match(tag):
        raise invalid("invalid model name", param="model")


def close_matches(name: str, candidates: list[str], limit: int = 3) -> list[str]:
    """Names a caller probably meant: similar full names, or the same base with another tag."""
    want = canonical(name)
    base = split_tag(want)[0]
    same_base = [c for c in candidates if split_tag(c)[0] == base]
    # An OpenAI-style id ("openai/gpt-oss-20b") often means an Ollama name ("gpt-oss:20b").
    tail = base.rsplit("/", 1)[-1]
    loose = {c.replace(":", "-").rsplit("/", 1)[-1]: c for c in candidates}
    loose_hits = [loose[k] for k in difflib.get_close_matches(tail, list(loose), n=limit)]
    fuzzy = difflib.get_close_matches(want, candidates, n=limit, cutoff=0.6)
    out: list[str] = []
    for c in same_base + fuzzy + loose_hits:
        if c not in out and c != want:
            out.append(c)
    return out[:limit]


_UNITS = {
    "": 1, "b": 1,
    "k": 1000, "kb": 1000, "m": 1000**2, "mb": 1000**2, "g": 1000**3, "gb": 1000**3,
    "t": 1000**4, "tb": 1000**4,
    "ki": 1024, "kib": 1024, "mi": 1024**2, "mib": 1024**2, "gi": 1024**3, "gib": 1024**3,
    "ti": 1024**4, "tib": 1024**4,
}  # fmt: skip
_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([a-zA-Z]*)\s*$")


def parse_size(value: int | float | str) -> int:
    """Bytes from `24GiB`, `16 GB`, `8000000000`; ValueError for anything else."""
    if isinstance(value, bool):
        raise ValueError(f"not a size: {value!r}")
    if isinstance(value, int | float):
        if value < 0:
            raise ValueError(f"not a size: {value!r}")
        return int(value)
    m = _SIZE.match(value)
    unit = m.group(2).lower() if m else ""
    if m is None or unit not in _UNITS:
        raise ValueError(f"not a size: {value!r} (write it like 24GiB or 16GB)")
    return int(float(m.group(1)) * _UNITS[unit])


class ModelDetails(msgspec.Struct, frozen=True, kw_only=True):
    """Ollama's `details` block."""

    format: str = ""
    family: str = ""
    families: tuple[str, ...] = ()
    parameter_size: str = ""
    quantization_level: str = ""
    parent_model: str = ""


class ModelCard(msgspec.Struct, frozen=True, kw_only=True):
    """One model on one backend, as listed by /api/tags and /v1/models."""

    name: str  # as the backend calls it (the upstream name)
    backend: str
    size: int = 0
    digest: str = ""
    modified_at: float = 0.0  # unix seconds
    details: ModelDetails = msgspec.field(default_factory=ModelDetails)
    capabilities: tuple[str, ...] = ()
    context_length: int | None = None
    owned_by: str = ""


class LoadedModel(msgspec.Struct, frozen=True, kw_only=True):
    """A model resident in memory (/api/ps)."""

    name: str
    backend: str
    size: int = 0
    size_vram: int = 0
    digest: str = ""
    expires_at: float | None = None  # unix seconds; None: never
    context_length: int | None = None
    details: ModelDetails = msgspec.field(default_factory=ModelDetails)


class ModelShow(msgspec.Struct, frozen=True, kw_only=True):
    """What /api/show tells about a model."""

    card: ModelCard
    model_info: dict[str, Any] = msgspec.field(default_factory=dict)
    capabilities: tuple[str, ...] = ()
    template: str = ""
    parameters: str = ""
    modelfile: str = ""
    license: str = ""
    system: str = ""
    extra: dict[str, Any] = msgspec.field(default_factory=dict)
