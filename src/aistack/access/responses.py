"""Stored responses (OpenAI Responses with `store: true`) for the routes: in the gate's
database when there is one (every replica sees them), else in this process.

A response belongs to the key that made it; for any other key it does not exist.
"""

from __future__ import annotations

from collections import OrderedDict

from aistack.store import Store
from aistack.store.responses import StoredResponse, chain, delete_response, get_response
from aistack.store.responses import put_response as _put

# Without a database, the most recent responses are kept in memory.
MEMORY_LIMIT = 10_000


class StoredResponses:
    def __init__(self, store: Store | None) -> None:
        self.store = store
        self._memory: OrderedDict[str, StoredResponse] = OrderedDict()

    async def put(self, r: StoredResponse) -> None:
        if self.store is not None:
            await self.store.run(_put, self.store, r)
            return
        self._memory[r.id] = r
        while len(self._memory) > MEMORY_LIMIT:
            self._memory.popitem(last=False)

    async def get(self, rid: str, owner: str) -> StoredResponse | None:
        if self.store is not None:
            return await self.store.run(get_response, self.store, rid, owner)
        r = self._memory.get(rid)
        return r if r is not None and r.owner == owner else None

    async def delete(self, rid: str, owner: str) -> bool:
        if self.store is not None:
            return await self.store.run(delete_response, self.store, rid, owner)
        r = self._memory.get(rid)
        if r is None or r.owner != owner:
            return False
        del self._memory[rid]
        return True

    async def chain(self, rid: str, owner: str) -> list[StoredResponse] | None:
        """The conversation ending with `rid`, oldest first; None if `owner` has no `rid`."""
        if self.store is not None:
            return await self.store.run(chain, self.store, rid, owner)
        out: list[StoredResponse] = []
        at: str | None = rid
        while at is not None and len(out) < 1000:
            r = self._memory.get(at)
            if r is None or r.owner != owner:
                break
            out.append(r)
            at = r.previous_id
        return list(reversed(out)) if out else None
