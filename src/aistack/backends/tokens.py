"""Backends that can count a prompt's tokens exactly (count_tokens endpoints)."""

from __future__ import annotations

from typing import Protocol, runtime_checkable

from aistack.core.chat import ChatRequest


@runtime_checkable
class CountsTokens(Protocol):
    """A backend with a tokenizer: the prompt's tokens as the model would read them."""

    async def count_tokens(self, req: ChatRequest, model: str) -> int: ...
