"""Image jobs, their files and prompt presets, on the same SQL path as keys and the ledger.

The queue is the `queued` rows of `image_jobs`, oldest first, shared by every replica
on one database. Every change of state is a compare-and-set on the state (and, once a
job is claimed, on its owner), so two replicas never both run a job and a late writer
never moves a finished job back:

- claim: a replica takes a queued job (owner, lease, the backend and the prompt id it
  is about to submit under). The prompt id is recorded before the submit, so whoever
  looks at the job later can ask that backend whether it already has the prompt.
- renew: the owner extends the leases of its active jobs; a job whose lease ran out
  (its replica died) may be adopted by another, or by the same one after a restart.

Methods are synchronous, for the store's own thread (`Store.run`).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

import orjson

from aistack.store.base import Store
from aistack.store.calendar import now_ms
from aistack.store.job_records import (
    FILE_COLUMNS,
    FILE_SELECT,
    JOB_COLUMNS,
    JOB_SELECT,
    MUTABLE,
    PRESET_COLUMNS,
    FileRecord,
    JobRecord,
    PresetRecord,
    db_value,
    file_of_row,
    job_of_row,
    marks,
)

ACTIVE = ("queued", "submitted", "running")


class JobTable:
    """The SQL of the image queue, on a `Store`'s connection and transactions."""

    def __init__(self, store: Store) -> None:
        self.store = store

    def _rows(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        return self.store._rows(sql, params)

    def _exec(self, sql: str, params: Sequence[Any] = ()) -> int:
        with self.store._transaction() as cur:
            cur.execute(self.store._sql(sql), params)
            return int(cur.rowcount)

    # -- jobs

    def insert(self, job: JobRecord) -> None:
        values = [getattr(job, c) for c in JOB_COLUMNS]
        values[JOB_COLUMNS.index("params")] = orjson.dumps(job.params).decode()
        values[JOB_COLUMNS.index("cancel_requested")] = int(job.cancel_requested)
        self._exec(
            f"INSERT INTO image_jobs ({', '.join(JOB_COLUMNS)}) VALUES ({marks(len(JOB_COLUMNS))})",
            values,
        )

    def get(self, job_id: str) -> JobRecord | None:
        rows = self._rows(f"{JOB_SELECT} WHERE id = ?", (job_id,))
        return job_of_row(rows[0]) if rows else None

    def recent(
        self,
        *,
        key_id: str | None = None,
        states: Iterable[str] = (),
        limit: int = 50,
        before_ms: int | None = None,
    ) -> list[JobRecord]:
        """Newest first (the gallery and the console's queue)."""
        where = ["created_at < ?"]
        params: list[Any] = [before_ms if before_ms is not None else 2**62]
        if key_id is not None:
            where.append("key_id = ?")
            params.append(key_id)
        st = list(states)
        if st:
            where.append(f"state IN ({marks(len(st))})")
            params += st
        rows = self._rows(
            f"{JOB_SELECT} WHERE {' AND '.join(where)} ORDER BY created_at DESC, id DESC LIMIT ?",
            (*params, limit),
        )
        return [job_of_row(r) for r in rows]

    def count(self, states: Iterable[str] = ("queued",)) -> int:
        st = list(states)
        return int(
            self._rows(f"SELECT COUNT(*) FROM image_jobs WHERE state IN ({marks(len(st))})", st)[0][
                0
            ]
        )

    def ahead_of(self, job: JobRecord) -> int:
        """How many queued jobs were queued before this one (its place in the queue)."""
        return int(
            self._rows(
                "SELECT COUNT(*) FROM image_jobs WHERE state = 'queued' AND "
                "(created_at < ? OR (created_at = ? AND id < ?))",
                (job.created_at, job.created_at, job.id),
            )[0][0]
        )

    def dispatchable(self, now: int, limit: int = 100, owner: str = "") -> list[JobRecord]:
        """Queued jobs nobody holds (never claimed, or the claim's lease ran out), and
        those `owner` claimed (before a restart, say)."""
        rows = self._rows(
            f"{JOB_SELECT} WHERE state = 'queued' AND (owner = '' OR owner = ? OR "
            "lease_until < ?) ORDER BY created_at, id LIMIT ?",
            (owner, now, limit),
        )
        return [job_of_row(r) for r in rows]

    def claim(
        self, job_id: str, owner: str, backend: str, prompt_id: str, lease_until: int, now: int
    ) -> bool:
        """Take a queued job to submit it: True when this owner got it."""
        return (
            self._exec(
                "UPDATE image_jobs SET owner = ?, lease_until = ?, backend = ?, prompt_id = ?, "
                "attempts = attempts + 1, updated_at = ? WHERE id = ? AND state = 'queued' "
                "AND (owner = '' OR owner = ? OR lease_until < ?)",
                (owner, lease_until, backend, prompt_id, now, job_id, owner, now),
            )
            == 1
        )

    def move(self, job_id: str, held_by: str, src: Iterable[str], dst: str, **changes: Any) -> bool:
        """Change state (and fields) if the job is in one of `src` and held by `held_by`
        ("" matches any holder: a job nobody runs). `changes` may hand it on (`owner`)."""
        bad = set(changes) - MUTABLE
        if bad:
            raise ValueError(f"cannot set {sorted(bad)} on a job")
        st = list(src)
        sets = ["state = ?", "updated_at = ?"] + [f"{k} = ?" for k in changes]
        params: list[Any] = [dst, now_ms(), *(db_value(v) for v in changes.values()), job_id, *st]
        where = f"id = ? AND state IN ({marks(len(st))})"
        if held_by:
            where += " AND owner = ?"
            params.append(held_by)
        return self._exec(f"UPDATE image_jobs SET {', '.join(sets)} WHERE {where}", params) == 1

    def update(self, job_id: str, held_by: str, **changes: Any) -> bool:
        """Fields of an active job this owner holds (progress, the prompt id)."""
        bad = set(changes) - MUTABLE
        if bad:
            raise ValueError(f"cannot set {sorted(bad)} on a job")
        sets = ", ".join(f"{k} = ?" for k in changes)
        return (
            self._exec(
                f"UPDATE image_jobs SET {sets}, updated_at = ? WHERE id = ? AND owner = ? "
                f"AND state IN ({marks(len(ACTIVE))})",
                (*(db_value(v) for v in changes.values()), now_ms(), job_id, held_by, *ACTIVE),
            )
            == 1
        )

    def renew(self, owner: str, lease_until: int) -> list[tuple[str, bool]]:
        """Extend this owner's leases; its active jobs and whether each was asked to stop."""
        with self.store._transaction() as cur:
            cur.execute(
                self.store._sql(
                    "UPDATE image_jobs SET lease_until = ? WHERE owner = ? AND state IN "
                    f"({marks(len(ACTIVE))})"
                ),
                (lease_until, owner, *ACTIVE),
            )
        rows = self._rows(
            f"SELECT id, cancel_requested FROM image_jobs WHERE owner = ? AND state IN "
            f"({marks(len(ACTIVE))})",
            (owner, *ACTIVE),
        )
        return [(r[0], bool(r[1])) for r in rows]

    def release(self, owner: str) -> int:
        """Let every job this owner holds be taken at once (a clean shutdown)."""
        return self._exec(
            f"UPDATE image_jobs SET lease_until = 0 WHERE owner = ? AND state IN "
            f"({marks(len(ACTIVE))})",
            (owner, *ACTIVE),
        )

    def adoptable(self, owner: str, now: int) -> list[JobRecord]:
        """Submitted or running jobs this owner may take over: its own (from before a
        restart) and those whose holder stopped renewing."""
        rows = self._rows(
            f"{JOB_SELECT} WHERE state IN ('submitted', 'running') AND "
            "(owner = ? OR lease_until < ?) ORDER BY created_at, id",
            (owner, now),
        )
        return [job_of_row(r) for r in rows]

    def adopt(self, job_id: str, owner: str, lease_until: int, now: int) -> bool:
        return (
            self._exec(
                "UPDATE image_jobs SET owner = ?, lease_until = ?, updated_at = ? WHERE id = ? "
                "AND state IN ('submitted', 'running') AND (owner = ? OR lease_until < ?)",
                (owner, lease_until, now, job_id, owner, now),
            )
            == 1
        )

    def request_cancel(self, job_id: str) -> bool:
        return (
            self._exec(
                "UPDATE image_jobs SET cancel_requested = 1, updated_at = ? WHERE id = ? AND "
                f"state IN ({marks(len(ACTIVE))})",
                (now_ms(), job_id, *ACTIVE),
            )
            == 1
        )

    def cancel_unclaimed(self, job_id: str, now: int) -> bool:
        """Cancel a job still waiting in our queue that no replica is about to submit."""
        return (
            self._exec(
                "UPDATE image_jobs SET state = 'cancelled', cancel_requested = 1, "
                "finished_at = ?, updated_at = ? WHERE id = ? AND state = 'queued' AND "
                "(owner = '' OR lease_until < ?)",
                (now, now, job_id, now),
            )
            == 1
        )

    def active_by_backend(self, now: int) -> dict[str, int]:
        """Jobs each backend has now (submitted, running, or claimed to be submitted)."""
        rows = self._rows(
            "SELECT backend, COUNT(*) FROM image_jobs WHERE backend <> '' AND "
            "(state IN ('submitted', 'running') OR (state = 'queued' AND owner <> '' "
            "AND lease_until >= ?)) GROUP BY backend",
            (now,),
        )
        return {r[0]: int(r[1]) for r in rows}

    def delete(self, job_id: str) -> list[FileRecord]:
        """Forget a finished job and its files' rows; the files it had (to unlink)."""
        with self.store._transaction() as cur:
            sql = self.store._sql
            cur.execute(
                sql(f"DELETE FROM image_jobs WHERE id = ? AND state NOT IN ({marks(len(ACTIVE))})"),
                (job_id, *ACTIVE),
            )
            if cur.rowcount != 1:
                return []
            cur.execute(sql(f"{FILE_SELECT} WHERE job_id = ?"), (job_id,))
            files = [file_of_row(r) for r in cur.fetchall()]
            cur.execute(sql("DELETE FROM image_files WHERE job_id = ?"), (job_id,))
        return files

    # -- files

    def add_files(self, files: Sequence[FileRecord]) -> None:
        if not files:
            return
        with self.store._transaction() as cur:
            cur.executemany(
                self.store._sql(
                    f"INSERT INTO image_files ({', '.join(FILE_COLUMNS)}) VALUES "
                    f"({marks(len(FILE_COLUMNS))})"
                ),
                [tuple(getattr(f, c) for c in FILE_COLUMNS) for f in files],
            )

    def files_of(self, job_ids: Sequence[str]) -> dict[str, list[FileRecord]]:
        out: dict[str, list[FileRecord]] = {j: [] for j in job_ids}
        if not job_ids:
            return out
        for i in range(0, len(job_ids), 500):
            part = list(job_ids[i : i + 500])
            for r in self._rows(
                f"{FILE_SELECT} WHERE job_id IN ({marks(len(part))}) ORDER BY job_id, idx", part
            ):
                f = file_of_row(r)
                out[f.job_id].append(f)
        return out

    def file(self, file_id: str) -> FileRecord | None:
        rows = self._rows(f"{FILE_SELECT} WHERE id = ?", (file_id,))
        return file_of_row(rows[0]) if rows else None

    def delete_file(self, file_id: str) -> FileRecord | None:
        f = self.file(file_id)
        if f is not None:
            self._exec("DELETE FROM image_files WHERE id = ?", (file_id,))
        return f

    def file_bytes(self) -> int:
        return int(self._rows("SELECT COALESCE(SUM(bytes), 0) FROM image_files")[0][0])

    def oldest_files(self, limit: int = 500, before_ms: int | None = None) -> list[FileRecord]:
        rows = self._rows(
            f"{FILE_SELECT} WHERE created_at < ? ORDER BY created_at, id LIMIT ?",
            (before_ms if before_ms is not None else 2**62, limit),
        )
        return [file_of_row(r) for r in rows]

    def delete_files(self, file_ids: Sequence[str]) -> None:
        with self.store._transaction() as cur:
            cur.executemany(
                self.store._sql("DELETE FROM image_files WHERE id = ?"), [(f,) for f in file_ids]
            )

    def finished_without_files(self, before_ms: int, limit: int = 500) -> list[str]:
        """Finished jobs older than `before_ms` whose images are all gone (retention)."""
        rows = self._rows(
            "SELECT id FROM image_jobs j WHERE state NOT IN ('queued', 'submitted', 'running') "
            "AND created_at < ? AND NOT EXISTS (SELECT 1 FROM image_files f WHERE "
            "f.job_id = j.id) ORDER BY created_at LIMIT ?",
            (before_ms, limit),
        )
        return [r[0] for r in rows]

    # -- presets

    def add_preset(self, p: PresetRecord) -> None:
        self._exec(
            f"INSERT INTO image_presets ({', '.join(PRESET_COLUMNS)}) VALUES "
            f"({marks(len(PRESET_COLUMNS))})",
            (p.id, p.name, p.created_at, p.key_id, p.model, orjson.dumps(p.params).decode()),
        )

    def presets(self, key_id: str | None = None) -> list[PresetRecord]:
        where, params = ("WHERE key_id = ?", (key_id,)) if key_id is not None else ("", ())
        rows = self._rows(
            f"SELECT {', '.join(PRESET_COLUMNS)} FROM image_presets {where} "
            "ORDER BY name, created_at",
            params,
        )
        return [
            PresetRecord(r[0], r[1], int(r[2]), r[3], r[4], orjson.loads(r[5]) if r[5] else {})
            for r in rows
        ]

    def delete_preset(self, preset_id: str, key_id: str | None = None) -> bool:
        if key_id is None:
            return self._exec("DELETE FROM image_presets WHERE id = ?", (preset_id,)) == 1
        return (
            self._exec("DELETE FROM image_presets WHERE id = ? AND key_id = ?", (preset_id, key_id))
            == 1
        )
