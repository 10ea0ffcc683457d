"""What a request cost, and how sure we are.

In order: the cost the backend reported (OpenRouter's `usage.cost`) -> "backend"; a
price from the config's table (USD per million input and output tokens; for image
models, per image and per second of GPU time) -> "price";
a backend billed as `local` (the default for the embedded engine and Ollama) -> 0 and
"local"; otherwise the cost is unknown: recorded as NULL with "unknown", counted in
reports and warned about once per model, never silently $0.
"""

from __future__ import annotations

import fnmatch
import logging
from collections.abc import Mapping
from dataclasses import dataclass

from aistack.core.events import Usage
from aistack.core.models import canonical

log = logging.getLogger("aistack.cost")


@dataclass(frozen=True, slots=True)
class Price:
    input: float  # USD per million prompt tokens
    output: float  # USD per million completion tokens
    image: float = 0.0  # USD per image made
    second: float = 0.0  # USD per second of the backend's time making images


# Anthropic's list prices (USD per million input and output tokens), shipped with the
# package so Claude models are costed with no network at runtime. The config's `prices`
# come first; cache reads and writes are costed as input (an upper bound for reads).
CLAUDE_PRICES: dict[str, Price] = {
    "claude-opus-4-5*": Price(5.0, 25.0),
    "claude-opus-4*": Price(15.0, 75.0),
    "claude-3-opus*": Price(15.0, 75.0),
    "claude-sonnet-4*": Price(3.0, 15.0),
    "claude-3-7-sonnet*": Price(3.0, 15.0),
    "claude-3-5-sonnet*": Price(3.0, 15.0),
    "claude-haiku-4*": Price(1.0, 5.0),
    "claude-3-5-haiku*": Price(0.8, 4.0),
    "claude-3-haiku*": Price(0.25, 1.25),
}


class Prices:
    def __init__(
        self,
        table: Mapping[str, Price],
        billing: Mapping[str, str],
        builtin: Mapping[str, Price] = CLAUDE_PRICES,
    ) -> None:
        # Exact names first, then globs in the order the config lists them, then the
        # prices that ship with the package.
        self._exact = {k.lower(): v for k, v in table.items() if not _is_glob(k)}
        self._globs = [(k.lower(), v) for k, v in table.items() if _is_glob(k)]
        self._globs += [(k.lower(), v) for k, v in builtin.items() if k.lower() not in table]
        self.billing = dict(billing)  # backend -> "local" | "metered"
        self._cache: dict[tuple[str, str, str], Price | None] = {}
        self._warned: set[tuple[str, str]] = set()

    def price_for(self, backend: str, upstream: str, requested: str) -> Price | None:
        k = (backend, upstream, requested)
        try:
            return self._cache[k]
        except KeyError:
            pass
        names = [f"{backend}/{upstream}".lower(), upstream.lower()]
        names += [canonical(n) for n in (upstream, requested) if n]
        found: Price | None = None
        for n in names:
            if n in self._exact:
                found = self._exact[n]
                break
        if found is None:
            for pattern, price in self._globs:
                if any(fnmatch.fnmatchcase(n, pattern) for n in names):
                    found = price
                    break
        if len(self._cache) > 4096:
            self._cache.clear()
        self._cache[k] = found
        return found

    def cost(
        self,
        backend: str,
        upstream: str,
        requested: str,
        usage: Usage | None,
        images: int = 0,
        gpu_ms: float = 0.0,
    ) -> tuple[float | None, str]:
        """Of tokens (`usage`), or of `images` and the backend's `gpu_ms` making them."""
        if (images or gpu_ms) and usage is None:
            usage = Usage()
        if usage is None or not backend:
            return 0.0, ""  # nothing reached a backend: nothing to pay
        if usage.cost is not None:
            return usage.cost, "backend"
        p = self.price_for(backend, upstream, requested)
        if p is not None:
            tokens = (usage.prompt_tokens * p.input + usage.completion_tokens * p.output) / 1e6
            return tokens + images * p.image + gpu_ms / 1000 * p.second, "price"
        if self.billing.get(backend, "metered") == "local":
            return 0.0, "local"
        if (backend, upstream) not in self._warned:
            self._warned.add((backend, upstream))
            log.warning(
                "no price for model %s on metered backend %s: its cost is recorded as unknown "
                "(add it under prices, or set billing: local on the backend)",
                upstream,
                backend,
            )
        return None, "unknown"


def _is_glob(s: str) -> bool:
    return any(c in s for c in "*?[")
