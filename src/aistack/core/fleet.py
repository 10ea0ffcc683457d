"""Model management values: the progress of a pull, and a request to manage a model.

Ollama reports a pull as a stream of `{status, digest?, total?, completed?}` objects,
one layer (blob) at a time; the core keeps exactly that shape so the gateway can relay
it and the command line can draw a progress bar from it.
"""

from __future__ import annotations

import msgspec


class PullProgress(msgspec.Struct, frozen=True, kw_only=True):
    """One step of a pull. `total` and `completed` are bytes of the layer `digest`."""

    status: str
    digest: str = ""
    total: int = 0
    completed: int = 0

    @property
    def done(self) -> bool:
        return self.status == "success"


class PullRequest(msgspec.Struct, frozen=True, kw_only=True):
    model: str
    # Deprecated in Ollama and ignored by it; Open WebUI always sends true.
    insecure: bool = False
    stream: bool = True
