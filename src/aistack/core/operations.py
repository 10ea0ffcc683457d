"""What a request does, as its route declares it (http/routes.py).

Everything that treats model work differently from the rest reads this from the
request context: the usage ledger records operations, metrics time them, tracing gives
them GenAI spans, the console keeps their prompts. A new route gets all of that by
declaring its operation; nothing looks at a handler's name.
"""

from __future__ import annotations

from enum import Enum


class Operation(Enum):
    NONE = "none"  # not model work: model lists, health, the admin API, console pages
    CHAT = "chat"
    COMPLETION = "completion"  # a prompt without messages (Ollama generate, /v1/completions)
    EMBED = "embed"
    IMAGE = "image"
    VECTOR = "vector"
