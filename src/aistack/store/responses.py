"""Stored responses (OpenAI Responses with `store: true`), in the same database as keys and
the ledger, so every replica finds a response any other made.

Each row is one response: the response object as GET /v1/responses/{id} answers it, the
input items of its request, and the response it continued. A conversation is a chain of
rows followed by `previous_id`, one primary-key lookup a turn. Rows belong to the key
that made them; another key sees none of them.
"""

from __future__ import annotations

from typing import NamedTuple

from aistack.store.base import Store

# How far a chain of previous_response_id is followed: a bound, not a limit anyone meets.
MAX_CHAIN = 1000


class StoredResponse(NamedTuple):
    id: str
    owner: str
    created_at: int  # ms
    previous_id: str | None
    model: str
    response: str  # JSON: the response object
    input: str  # JSON: this request's input items


_COLUMNS = "id, owner, created_at, previous_id, model, response, input"


def put_response(st: Store, r: StoredResponse) -> None:
    with st._transaction() as cur:
        cur.execute(
            st._sql(f"INSERT INTO responses ({_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?)"),
            tuple(r),
        )


def get_response(st: Store, rid: str, owner: str) -> StoredResponse | None:
    rows = st._rows(f"SELECT {_COLUMNS} FROM responses WHERE id = ? AND owner = ?", (rid, owner))
    return StoredResponse(*rows[0]) if rows else None


def delete_response(st: Store, rid: str, owner: str) -> bool:
    with st._transaction() as cur:
        cur.execute(st._sql("DELETE FROM responses WHERE id = ? AND owner = ?"), (rid, owner))
        return bool(cur.rowcount)


def chain(st: Store, rid: str, owner: str) -> list[StoredResponse] | None:
    """The responses a conversation is made of, oldest first, ending with `rid`; None
    when `rid` is not one of `owner`'s. A link missing on the way (deleted, pruned) ends
    the chain there."""
    out: list[StoredResponse] = []
    seen: set[str] = set()
    at: str | None = rid
    while at is not None and at not in seen and len(out) < MAX_CHAIN:
        seen.add(at)
        r = get_response(st, at, owner)
        if r is None:
            if not out:
                return None
            break
        out.append(r)
        at = r.previous_id
    out.reverse()
    return out


def prune_responses(st: Store, before_ms: int) -> int:
    with st._transaction() as cur:
        cur.execute(st._sql("DELETE FROM responses WHERE created_at < ?"), (before_ms,))
        return int(cur.rowcount or 0)


__all__ = [
    "MAX_CHAIN",
    "StoredResponse",
    "chain",
    "delete_response",
    "get_response",
    "prune_responses",
    "put_response",
]
