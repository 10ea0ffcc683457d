"""Snapshots of collections in a directory, kept hourly/daily/weekly (grandfather-father-son).

A snapshot file is `<collection>-<UTC stamp>.snapshot` (the collection's name
percent-encoded): for the embedded engine, a tar of the flushed shard and its
meta.json, restorable into a new or an existing collection. With `vectors.backup.dir`
set, every collection is snapshotted once an hour and the directory pruned: the newest
snapshot of each of the last `hourly` hours, `daily` days and `weekly` ISO weeks is
kept (one file can count for all three), the rest deleted.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
from collections.abc import Callable, Iterable
from datetime import UTC, datetime
from pathlib import Path
from urllib.parse import quote, unquote

from aistack.config import VectorBackupConfig
from aistack.vectors.engine import Engine

log = logging.getLogger("aistack.vectors")

_FILE = re.compile(r"^(?P<name>.+)-(?P<stamp>\d{8}T\d{6}Z)\.snapshot$")


def parse_name(filename: str) -> tuple[str, datetime] | None:
    m = _FILE.match(filename)
    if m is None:
        return None
    when = datetime.strptime(m.group("stamp"), "%Y%m%dT%H%M%SZ").replace(tzinfo=UTC)
    return unquote(m.group("name")), when


def retained(stamps: Iterable[datetime], hourly: int, daily: int, weekly: int) -> set[datetime]:
    """Which snapshots a grandfather-father-son rotation keeps: for each tier, the newest
    snapshot in each of its newest `n` buckets (hours, days, ISO weeks)."""
    ordered = sorted(set(stamps), reverse=True)
    keep: set[datetime] = set()
    tiers: tuple[tuple[int, Callable[[datetime], tuple[int, ...]]], ...] = (
        (hourly, lambda t: (t.year, t.month, t.day, t.hour)),
        (daily, lambda t: (t.year, t.month, t.day)),
        (weekly, lambda t: tuple(t.isocalendar()[:2])),
    )
    for n, bucket in tiers:
        seen: set[object] = set()
        for t in ordered:
            if len(seen) >= n:
                break
            b = bucket(t)
            if b not in seen:
                seen.add(b)
                keep.add(t)
    return keep


def prune(directory: Path, backup: VectorBackupConfig) -> list[Path]:
    """Delete what the rotation does not keep, per collection; the files deleted."""
    by_collection: dict[str, dict[datetime, Path]] = {}
    for f in directory.glob("*.snapshot"):
        parsed = parse_name(f.name)
        if parsed is not None:
            by_collection.setdefault(parsed[0], {})[parsed[1]] = f
    gone = []
    for files in by_collection.values():
        keep = retained(files, backup.hourly, backup.daily, backup.weekly)
        for when, f in files.items():
            if when not in keep:
                with contextlib.suppress(OSError):
                    f.unlink()
                    gone.append(f)
    return gone


def snapshot_file(directory: Path, collection: str, when: datetime) -> Path:
    return directory / f"{quote(collection, safe='')}-{when.strftime('%Y%m%dT%H%M%SZ')}.snapshot"


async def snapshot_all(engine: Engine, directory: Path, backup: VectorBackupConfig) -> list[Path]:
    """A snapshot of every collection, then the rotation."""
    made = []
    for s in await engine.stats():
        try:
            made.append(await engine.snapshot(s.name, directory))
        except Exception as e:
            log.warning("vectors: snapshot of %s failed: %s", s.name, e)
    await asyncio.to_thread(prune, directory, backup)
    return made


class BackupSchedule:
    """Once an hour (on the hour's first check), every collection to `backup.dir`."""

    def __init__(self, engine: Engine, backup: VectorBackupConfig, base: Path | None) -> None:
        assert backup.dir is not None
        d = Path(backup.dir).expanduser()
        self.dir = d if d.is_absolute() or base is None else base / d
        self.engine = engine
        self.backup = backup
        self._task: asyncio.Task[None] | None = None
        self.last_hour: tuple[int, int, int, int] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._loop(), name="vectors-backup")

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def _loop(self) -> None:
        while True:
            now = datetime.now(UTC)
            hour = (now.year, now.month, now.day, now.hour)
            if hour != self.last_hour:
                self.last_hour = hour
                try:
                    made = await snapshot_all(self.engine, self.dir, self.backup)
                    log.info("vectors: %d snapshots written to %s", len(made), self.dir)
                except Exception:
                    log.exception("vectors: scheduled snapshots failed")
            await asyncio.sleep(60)
