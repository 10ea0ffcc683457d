"""What an engine does: Qdrant's operations on physical collection names.

The service (service.py) has already checked who is calling, mapped the names the app
uses to physical ones, embedded any text, and checked the quotas; an engine just runs
the operation and returns Qdrant's `result` for it, with physical names in it. Two
engines: `embedded` (embedded/: the Qdrant engine in process) and `qdrant`
(proxy.py: a Qdrant server, spoken to through its REST API).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from aistack.dialects.qdrant import Op


@dataclass(frozen=True, slots=True)
class CollectionStats:
    """What `aistack vectors list|stats`, the metrics and the console show."""

    name: str  # physical
    points: int
    vectors: dict[str, int]  # vector name ("" the unnamed one) -> size
    disk_bytes: int | None  # None: the engine cannot say (a remote server)
    last_write: float | None  # unix seconds; None: unknown or never
    segments: int = 0
    indexed: int = 0
    status: str = "green"


class Engine(Protocol):
    kind: str  # "embedded" | "qdrant"

    async def start(self) -> None: ...

    async def close(self) -> None: ...

    async def ready(self) -> tuple[bool, str]:
        """Whether the engine answers, and why not."""
        ...

    async def call(
        self, op: Op, collection: str, arg: str, body: dict[str, Any], params: dict[str, str]
    ) -> Any:
        """Run one operation; its Qdrant `result`. Raises GatewayError in Qdrant's terms."""
        ...

    async def vector_sizes(self, collection: str) -> dict[str, int]:
        """The collection's dense vectors by name and their sizes (for text in)."""
        ...

    async def stats(self) -> list[CollectionStats]: ...

    async def snapshot(self, collection: str, dest: Path) -> Path:
        """Write a snapshot of `collection` under the directory `dest`; its path."""
        ...

    async def restore(self, snapshot: Path, collection: str) -> int:
        """Make `collection` (new or existing) the snapshot's content; its point count."""
        ...
