"""The image queue's storage contract, on SQLite and the real PostgreSQL server.

What the queue relies on: jobs come out oldest first; a claim, an adoption and every
change of state are compare-and-sets, so two replicas racing for one job get it once
and a stale writer never moves a job it no longer holds; leases let a job whose
replica died be taken over; files and presets are kept with the job.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from aistack.store import Store, open_store
from aistack.store.job_records import FileRecord, JobRecord, PresetRecord
from aistack.store.jobs import JobTable

T0 = 1_800_000_000_000


@pytest.fixture(params=["sqlite", "postgres"])
def table(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[JobTable]:
    if request.param == "sqlite":
        s: Store = open_store(str(tmp_path / "jobs.db"))
    else:
        import psycopg

        url: str = request.getfixturevalue("pg_url")
        with psycopg.connect(url, autocommit=True) as c:
            c.execute("DROP SCHEMA public CASCADE")
            c.execute("CREATE SCHEMA public")
        s = open_store(url)
    s.migrate()
    try:
        yield JobTable(s)
    finally:
        s.close()


def job(jid: str, at: int = T0, **kw: object) -> JobRecord:
    args: dict[str, object] = dict(
        id=jid, created_at=at, updated_at=at, state="queued", model="sdxl:latest",
        params={"prompt": "a fox", "n": 2, "width": 64, "height": 64}, key_id="k1", app="app",
    )  # fmt: skip
    args.update(kw)
    return JobRecord(**args)  # type: ignore[arg-type]


def test_a_job_keeps_every_field_and_the_queue_is_oldest_first(table: JobTable) -> None:
    a, b, c = job("a", T0 + 2), job("b", T0 + 1), job("c", T0 + 1, key_id="k2")
    for j in (a, b, c):
        table.insert(j)
    assert table.get("a") == a
    assert table.get("nope") is None
    assert [j.id for j in table.dispatchable(T0)] == ["b", "c", "a"]
    assert [j.id for j in table.recent()] == ["a", "c", "b"]
    assert [j.id for j in table.recent(key_id="k2")] == ["c"]
    assert table.count() == 3
    assert table.ahead_of(a) == 2 and table.ahead_of(b) == 0


def test_a_claim_is_won_once_and_a_stale_owner_cannot_move_the_job(table: JobTable) -> None:
    table.insert(job("j"))
    assert table.claim("j", "r1", "comfy-a", "j-1", T0 + 30_000, T0)
    assert not table.claim("j", "r2", "comfy-b", "j-1b", T0 + 30_000, T0 + 1)
    assert table.dispatchable(T0 + 1) == []
    assert table.active_by_backend(T0 + 1) == {"comfy-a": 1}
    got = table.get("j")
    assert got is not None and (got.owner, got.backend, got.prompt_id, got.attempts) == (
        "r1", "comfy-a", "j-1", 1,
    )  # fmt: skip
    assert not table.move("j", "r2", ["queued"], "submitted")
    assert table.move("j", "r1", ["queued"], "submitted")
    assert table.move("j", "r1", ["submitted"], "running", started_at=T0 + 5, progress_max=4)
    assert table.update("j", "r1", progress_value=2, progress_node="3")
    assert not table.update("j", "r2", progress_value=3)
    assert table.move("j", "r1", ["running"], "succeeded", finished_at=T0 + 9, gpu_ms=4000.5)
    assert not table.move("j", "r1", ["running"], "failed")  # finished stays finished
    done = table.get("j")
    assert done is not None and done.state == "succeeded" and done.progress_value == 2
    assert done.gpu_ms == 4000.5 and done.started_at == T0 + 5
    assert table.active_by_backend(T0 + 10) == {}
    with pytest.raises(ValueError):
        table.update("j", "r1", state="queued")


def test_racing_replicas_claim_each_job_exactly_once(table: JobTable) -> None:
    for i in range(20):
        table.insert(job(f"j{i:02d}", T0 + i))
    url = getattr(table.store, "url", None) or str(getattr(table.store, "path", ""))
    won: dict[str, list[str]] = {}
    lock = threading.Lock()

    def replica(name: str) -> None:
        t = JobTable(open_store(url))
        try:
            for j in t.dispatchable(T0):
                if t.claim(j.id, name, "comfy", f"{j.id}-{name}", T0 + 60_000, T0):
                    with lock:
                        won.setdefault(j.id, []).append(name)
        finally:
            t.store.close()

    threads = [threading.Thread(target=replica, args=(f"r{i}",)) for i in range(3)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    assert sorted(won) == [f"j{i:02d}" for i in range(20)]
    assert all(len(v) == 1 for v in won.values()), won


def test_a_lease_that_ran_out_lets_another_replica_take_the_job(table: JobTable) -> None:
    table.insert(job("q"))
    table.insert(job("s", T0 + 1))
    assert table.claim("q", "dead", "comfy", "q-1", T0 + 10, T0)
    assert table.claim("s", "dead", "comfy", "s-1", T0 + 10, T0)
    assert table.move("s", "dead", ["queued"], "submitted")
    # Before it runs out: nobody else; after: the queued one is dispatchable again
    # (its last prompt id kept, so the taker can ask the backend) and the submitted
    # one adoptable.
    assert table.dispatchable(T0 + 5) == [] and table.adoptable("r2", T0 + 5) == []
    later = T0 + 11
    q = table.dispatchable(later)
    assert [j.id for j in q] == ["q"] and q[0].prompt_id == "q-1"
    assert [j.id for j in table.adoptable("r2", later)] == ["s"]
    assert table.adopt("s", "r2", later + 30_000, later)
    assert not table.adopt("s", "r3", later + 30_000, later)
    # The owner itself (restarted under the same name) adopts its own at once.
    assert [j.id for j in table.adoptable("r2", later)] == ["s"]
    assert table.renew("r2", later + 60_000) == [("s", False)]
    assert table.request_cancel("s")
    assert table.renew("r2", later + 60_000) == [("s", True)]
    assert table.release("r2") == 1
    assert table.adoptable("r3", later) != []


def test_only_an_unclaimed_queued_job_is_cancelled_on_the_spot(table: JobTable) -> None:
    table.insert(job("free"))
    table.insert(job("held"))
    assert table.claim("held", "r1", "comfy", "held-1", T0 + 30_000, T0)
    assert table.cancel_unclaimed("free", T0)
    assert not table.cancel_unclaimed("held", T0)
    assert table.request_cancel("held")
    got = table.get("free")
    assert got is not None and got.state == "cancelled" and got.finished_at == T0
    assert not table.request_cancel("free")  # already finished


def test_files_are_kept_with_their_job_and_deleted_with_it(table: JobTable) -> None:
    table.insert(job("j"))
    files = [
        FileRecord(
            f"img{i}", "j", i, T0 + i, "k1", f"2026-03-10/img{i}.png", "image/png", 1000 + i, 64, 64
        )
        for i in range(2)
    ]
    table.add_files(files)
    assert table.files_of(["j", "x"]) == {"j": files, "x": []}
    assert table.file("img1") == files[1]
    assert table.file_bytes() == 2001
    assert table.oldest_files(1) == [files[0]]
    assert table.delete_file("img0") == files[0]
    assert table.delete_file("img0") is None
    assert table.delete("j") == []  # an active job is not deleted
    assert table.get("j") is not None
    assert table.move("j", "", ["queued"], "failed", error="x")
    assert table.delete("j") == [files[1]]
    assert table.get("j") is None and table.file_bytes() == 0


def test_finished_jobs_whose_files_are_gone_are_found_for_pruning(table: JobTable) -> None:
    table.insert(job("old", T0, state="succeeded"))
    table.insert(job("kept", T0, state="succeeded"))
    table.insert(job("new", T0 + 100, state="failed"))
    table.add_files([FileRecord("f", "kept", 0, T0, "", "f.png", "image/png", 5)])
    assert table.finished_without_files(T0 + 50) == ["old"]


def test_presets_are_listed_by_name_and_per_key(table: JobTable) -> None:
    a = PresetRecord("p1", "watercolor", T0, "k1", "sdxl", {"prompt": "{x}, watercolor"})
    b = PresetRecord("p2", "anime", T0 + 1, "", "", {"steps": 20})
    table.add_preset(a)
    table.add_preset(b)
    assert table.presets() == [b, a]
    assert table.presets("k1") == [a]
    assert not table.delete_preset("p1", key_id="k2")
    assert table.delete_preset("p1", key_id="k1")
    assert table.presets() == [b]


def test_a_job_handed_back_to_the_queue_is_dispatchable_with_its_last_prompt(
    table: JobTable,
) -> None:
    table.insert(job("j"))
    assert table.claim("j", "r1", "comfy-a", "j-1", T0 + 30_000, T0)
    assert table.move("j", "r1", ["queued"], "submitted")
    assert table.move("j", "r1", ["submitted"], "queued", owner="", lease_until=0)
    (back,) = table.dispatchable(T0)
    assert (back.owner, back.backend, back.prompt_id, back.attempts) == ("", "comfy-a", "j-1", 1)
    assert table.claim("j", "r2", "comfy-b", "j-2", T0 + 30_000, T0)
    got = table.get("j")
    assert got is not None and (got.backend, got.prompt_id, got.attempts) == ("comfy-b", "j-2", 2)
