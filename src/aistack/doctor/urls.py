"""URL and model-name mistakes that can be seen without asking anyone.

The classic ones (shared/reference/ollama-api.md 3.4, 6.18): an Ollama backend given
the OpenAI layer's `/v1` or the native `/api` path; an OpenAI base URL pointing at
Ollama's `/api`; a model declared as `qwen3` when the box has `qwen3:4b` (a bare name
means `:latest`); an OpenAI-style id (`openai/gpt-oss-20b`) declared for an Ollama
backend, which calls it `gpt-oss:20b`.
"""

from __future__ import annotations

import re
from collections.abc import Collection
from dataclasses import dataclass
from urllib.parse import urlsplit, urlunsplit

from aistack.core.models import canonical, close_matches, split_tag


@dataclass(frozen=True)
class Problem:
    detail: str
    fix: str


def _with_path(url: str, path: str) -> str:
    p = urlsplit(url)
    return urlunsplit((p.scheme, p.netloc, path, "", ""))


_OLLAMA_SUFFIX = re.compile(r"/(v1|api)(/.*)?$")
_OPENAI_API = re.compile(r"/api(/(tags|chat|generate|embed|show|version|ps).*)?$")
_OPENAI_ENDPOINT = re.compile(r"/(chat/completions|completions|embeddings|models)/?$")


def url_problem(kind: str, url: str) -> Problem | None:
    """A backend URL in the wrong form for its kind, with the URL it should be."""
    path = urlsplit(url).path.rstrip("/")
    if kind == "ollama":
        m = _OLLAMA_SUFFIX.search(path)
        if m:
            root = _with_path(url, path[: m.start()])
            what = "the OpenAI layer" if m.group(1) == "v1" else "the native API path"
            return Problem(
                f"the url ends in /{m.group(1)} ({what}); an Ollama backend's url is the "
                "server root",
                f"url: {root}",
            )
    elif kind == "openai":
        m = _OPENAI_API.search(path)
        if m and not path.endswith("/v1"):
            base = _with_path(url, path[: m.start()] + "/v1")
            return Problem(
                "the url points at Ollama's native /api; an OpenAI base URL ends in /v1",
                f"url: {base} (or kind: ollama with url: {_with_path(url, path[: m.start()])})",
            )
        m = _OPENAI_ENDPOINT.search(path)
        if m:
            base = _with_path(url, path[: m.start()])
            return Problem(
                f"the url includes the endpoint /{m.group(1)}; give the API base",
                f"url: {base}",
            )
    return None


def missing_model_fix(
    kind: str, backend: str, declared: str, have: Collection[str]
) -> tuple[str, str]:
    """Why a declared model is not on its backend, and the one-line fix."""
    want = canonical(declared)
    base = split_tag(want)[0]
    same_base = sorted(h for h in have if split_tag(canonical(h))[0] == base)
    if same_base and ":" not in declared.rsplit("/", 1)[-1]:
        return (
            f"'{declared}' means '{want}', which {backend} does not have; it has "
            + ", ".join(f"'{h}'" for h in same_base),
            f"declare '{same_base[0]}' (a name without a tag means :latest)",
        )
    if kind == "ollama" and "/" in declared and ":" not in declared:
        hint = close_matches(declared, sorted(canonical(h) for h in have))
        detail = f"'{declared}' looks like an OpenAI-style id; Ollama names models name:tag"
        if hint:
            return (
                detail + f" and {backend} has '{hint[0]}'",
                f"declare '{hint[0]}', and alias '{declared}: {hint[0]}' for apps that "
                "use the OpenAI id",
            )
        return (
            detail,
            f"declare the Ollama name (as `ollama list` shows it), or pull it: "
            f"aistack models pull NAME --instance {backend}",
        )
    if kind == "ollama":
        return (
            f"declared but not on {backend}",
            f"aistack models pull {declared} --instance {backend} (or: aistack models sync)",
        )
    hint = close_matches(declared, sorted(have))
    if hint:
        return (
            f"declared but {backend} does not serve it; it serves '{hint[0]}'",
            f"declare '{hint[0]}' (an alias can keep the old name for apps)",
        )
    return (
        f"declared but {backend} does not serve it",
        f"load '{declared}' on that server, or remove it from {backend}'s models:",
    )
