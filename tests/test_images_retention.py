"""Retention of made images: by age, then by total size, then finished jobs left empty;
on a real SQLite store and real files."""

from __future__ import annotations

import asyncio
from pathlib import Path

from aistack.images import ImageQueue, Images, QueueSettings, Retention
from aistack.images.gpu import GpuSharing
from aistack.images.results import Results, dimensions, sniff
from aistack.routing.catalog import Catalog
from aistack.store import open_store
from aistack.store.job_records import JobRecord
from tests import comfy

DAY = 86_400_000


async def _no_unload(backend: str, model: str) -> bool:
    return False


def test_old_images_go_then_the_oldest_over_the_size_cap_then_empty_jobs(tmp_path: Path) -> None:
    async def main() -> tuple[int, int, list[str], list[bool], list[str]]:
        store = open_store(str(tmp_path / "db.sqlite"))
        await store.run(store.migrate)
        results = Results(tmp_path / "images")
        q = ImageQueue(store, Catalog([]), {}, {}, results, GpuSharing({}, _no_unload),
                       QueueSettings(owner="test:1"))  # fmt: skip
        t = q.table
        now = 100 * DAY
        png = comfy.png(64, 32)
        files = []
        for i, age_days in enumerate((40, 10, 5, 1)):
            at = now - age_days * DAY
            job = JobRecord(f"j{i}", at, at, "succeeded", "m", {"prompt": "p"})
            await q.db(t.insert, job)
            f = results.save(job.id, 0, png, "")
            f = type(f)(f.id, f.job_id, f.idx, at, f.key_id, f.path, f.mime, f.bytes, f.width,
                        f.height)  # fmt: skip
            files.append(f)
        await q.db(t.add_files, files)
        # 30 days, and room for two images: the 40-day-old one goes for its age, the
        # 10-day-old one for the cap; its job goes once it is past the age too.
        images = Images(q, Retention(days=30, max_bytes=2 * len(png)))
        removed, jobs = await images.prune(now)
        left = [f.id for f in await q.db(t.oldest_files, 10)]
        on_disk = [results.path(f).exists() for f in files]
        kept_jobs = [j.id for j in await q.db(t.recent)]
        await store.aclose()
        return removed, jobs, left, on_disk, kept_jobs

    removed, jobs, left, on_disk, kept_jobs = asyncio.run(main())
    assert removed == 2 and jobs == 1
    assert on_disk == [False, False, True, True]
    assert len(left) == 2
    assert kept_jobs == ["j3", "j2", "j1"]  # j0 was old and has no image left


def test_image_files_are_recognised_by_their_bytes() -> None:
    png = comfy.png(48, 16)
    assert sniff(png) == ("image/png", "png") and dimensions(png) == (48, 16)
    assert sniff(b"\xff\xd8\xff\xe0rest")[0] == "image/jpeg"
    assert sniff(b"nope") == ("application/octet-stream", "bin")
    assert dimensions(b"nope") == (0, 0)
