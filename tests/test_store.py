"""The storage contract: one suite, run against SQLite and the real PostgreSQL server.

Every test starts from a blank database, so the migrations are exercised from zero
each time, and asserts only what the gateway relies on.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from aistack.store import KeyRecord, Store, StoreError, UsageRow, open_store
from aistack.store.calendar import day_start_ms, period_end_ms, period_start
from aistack.store.migrations import MIGRATIONS

DAY = 86_400_000
T0 = day_start_ms("2026-03-10") + 3_600_000  # 01:00 UTC on a Tuesday


@pytest.fixture(params=["sqlite", "postgres"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Store]:
    if request.param == "sqlite":
        s = open_store(str(tmp_path / "ledger.db"))
    else:
        import psycopg

        url: str = request.getfixturevalue("pg_url")
        with psycopg.connect(url, autocommit=True) as c:
            c.execute("DROP SCHEMA public CASCADE")
            c.execute("CREATE SCHEMA public")
        s = open_store(url)
    s.migrate()
    try:
        yield s
    finally:
        s.close()


def row(ts: int, **kw: object) -> UsageRow:
    base: dict[str, object] = dict(
        ts=ts, request_id="r", key_id="k1", app="paperless", end_user="", dialect="openai",
        route="chat_completions", model="gpt-oss:20b", backend="reason",
        upstream_model="gpt-oss:20b", stream=0, status=200, error="", tokens_in=10,
        tokens_out=5, tokens_estimated=0, ttft_ms=12.5, duration_ms=100.0, cost=0.001,
        cost_source="price", attempts=1,
    )  # fmt: skip
    base.update(kw)
    return UsageRow(**base)  # type: ignore[arg-type]


def key(kid: str = "k1", name: str = "paperless", **kw: object) -> KeyRecord:
    args: dict[str, object] = dict(
        id=kid, name=name, hash=f"hash-of-{kid}", hint="sk-aistack-…abcd", created_at=T0
    )
    args.update(kw)
    return KeyRecord(**args)  # type: ignore[arg-type]


def test_a_blank_database_migrates_to_the_latest_schema_once(store: Store) -> None:
    assert store.version() == store.latest()
    assert store.migrate() == []
    store.check_schema()


def test_a_schema_behind_this_version_refuses_and_says_how_to_upgrade(tmp_path: Path) -> None:
    s = open_store(str(tmp_path / "old.db"))
    try:
        with pytest.raises(StoreError, match=r"schema version 0, .*aistack db upgrade"):
            s.check_schema()
    finally:
        s.close()


def test_concurrent_upgrades_apply_each_step_once(store: Store) -> None:
    url = getattr(store, "url", None) or str(getattr(store, "path", ""))
    # A blank schema again, then two processes' worth of stores racing to upgrade it.
    if store.kind == "postgres":
        store.conn.execute("DROP SCHEMA public CASCADE")
        store.conn.execute("CREATE SCHEMA public")
    else:
        store.close()
        Path(url).unlink()
        for suffix in ("-wal", "-shm"):
            Path(url + suffix).unlink(missing_ok=True)
    racers = [open_store(url) for _ in range(3)]
    results: list[int] = []
    errors: list[BaseException] = []

    def up(s: Store) -> None:
        try:
            results.append(len(s.migrate()))
        except BaseException as e:
            errors.append(e)

    threads = [threading.Thread(target=up, args=(s,)) for s in racers]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for s in racers:
        s.close()
    assert not errors
    assert sorted(results) == [0, 0, len(MIGRATIONS)]


def test_keys_are_stored_listed_and_revoked(store: Store) -> None:
    a = key("k1", "paperless", models=("gpt-oss:*", "qwen3:8b"), rpm=60, tpm=100_000,
            concurrent=2, budget=5.0, budget_period="month", expires_at=T0 + 90 * DAY)  # fmt: skip
    b = key("k2", "frigate")
    store.create_key(a)
    store.create_key(b)
    assert store.list_keys() == [a, b]
    assert store.key_count() == 2
    with pytest.raises(Exception):  # noqa: B017 - either driver's IntegrityError
        store.create_key(key("k3", "dup", hash=a.hash))
    (revoked,) = store.revoke_key("k1", at=T0 + 5)
    assert revoked.id == "k1"
    assert {k.id: k.revoked_at for k in store.list_keys()} == {"k1": T0 + 5, "k2": None}
    assert store.revoke_key("k1") == []  # already revoked
    assert [k.id for k in store.revoke_key("frigate")] == ["k2"]  # by name
    assert store.revoke_key("nobody") == []


def test_usage_rows_keep_every_field_and_update_last_use(store: Store) -> None:
    store.create_key(key("k1"))
    rows = [
        row(T0, request_id="a", end_user="ann@example.org", stream=1),
        row(T0 + 10, request_id="b", cost=None, cost_source="unknown", tokens_estimated=1),
        row(
            T0 + 20,
            request_id="c",
            key_id="",
            app="",
            status=401,
            error="UNAUTHORIZED",
            backend="",
            upstream_model="",
            tokens_in=0,
            tokens_out=0,
            cost=0.0,
            cost_source="",
            ttft_ms=None,
        ),
    ]
    store.write_usage(rows)
    store.write_usage([])
    assert store.count_requests() == 3
    assert store.requests(limit=10) == rows[::-1]
    assert store.requests(limit=10, key_id="k1") == rows[1::-1]
    assert store.requests(limit=1, before_ms=T0 + 20) == [rows[1]]
    (k,) = store.list_keys()
    assert k.last_used_at == T0 + 10
    store.write_usage([row(T0 - 1000)])  # an older row never moves last use back
    assert store.list_keys()[0].last_used_at == T0 + 10


def test_a_large_batch_is_written_whole_in_order_and_summed_once(store: Store) -> None:
    # Written a few dozen rows at a time (the writer steps aside for the event loop in
    # between), still one transaction: every row once, the daily sums exact.
    rows = [row(T0 + i, request_id=f"r{i}", cost=0.001 * (i % 7)) for i in range(203)]
    store.write_usage(rows)
    assert store.count_requests() == 203
    assert store.requests(limit=500) == rows[::-1]
    total = store.report([], T0 - DAY).total
    assert (total.requests, total.tokens_in) == (203, 2030)
    assert total.cost == pytest.approx(sum(r.cost or 0 for r in rows))
    assert store.report(["day"], 0).total.requests == 203  # the daily sums agree


def test_reports_group_and_total_exactly(store: Store) -> None:
    store.write_usage(
        [
            row(T0, key_id="k1", app="paperless", model="gpt-oss:20b", cost=0.5),
            row(
                T0 + 1,
                key_id="k1",
                app="paperless",
                model="qwen3:8b",
                backend="vision",
                cost=None,
                cost_source="unknown",
            ),
            row(
                T0 + DAY,
                key_id="k2",
                app="frigate",
                model="qwen3:8b",
                backend="vision",
                cost=0.25,
                tokens_in=100,
                tokens_out=1,
            ),
            row(
                T0 + DAY,
                key_id="k2",
                app="frigate",
                model="qwen3:8b",
                backend="vision",
                status=502,
                error="UPSTREAM_UNREACHABLE",
                cost=0.0,
                tokens_in=0,
                tokens_out=0,
            ),
        ]
    )
    by_key = {r.group["key"]: r for r in store.report(["key"], T0 - DAY).rows}
    assert by_key["k1"].group["app"] == "paperless"
    assert (by_key["k1"].requests, by_key["k1"].cost, by_key["k1"].cost_unknown) == (2, 0.5, 1)
    assert (by_key["k2"].requests, by_key["k2"].errors, by_key["k2"].tokens_in) == (2, 1, 100)
    by_model = {r.group["model"]: r.requests for r in store.report(["model"], 0).rows}
    assert by_model == {"gpt-oss:20b": 1, "qwen3:8b": 3}
    by_backend = {r.group["backend"]: r.requests for r in store.report(["backend"], 0).rows}
    assert by_backend == {"reason": 1, "vision": 3}
    days = [(r.group["day"], r.requests) for r in store.report(["day"], 0).rows]
    assert days == [("2026-03-10", 2), ("2026-03-11", 2)]
    both = store.report(["key", "model"], 0)
    assert len(both.rows) == 3 and both.total.requests == 4
    assert store.report(["key"], T0 + DAY).total.requests == 2  # since is exact on raw rows
    assert store.report([], 0).total.cost == pytest.approx(0.75)
    with pytest.raises(ValueError, match="cannot group by 'colour'"):
        store.report(["colour"], 0)


def test_old_rows_roll_up_into_daily_sums_that_reports_still_count(store: Store) -> None:
    store.write_usage([row(T0 + i) for i in range(5)])
    store.write_usage([row(T0 + 3 * DAY + i, model="qwen3:8b") for i in range(3)])
    assert store.prune(T0 + 2 * DAY, chunk=2) == 5
    assert store.count_requests() == 3
    assert store.raw_since() == day_start_ms("2026-03-12")
    rep = store.report(["model"], T0 - DAY)
    assert rep.rolled_up
    assert {r.group["model"]: r.requests for r in rep.rows} == {"gpt-oss:20b": 5, "qwen3:8b": 3}
    assert rep.total.cost == pytest.approx(0.008)
    recent = store.report(["model"], T0 + 2 * DAY)
    assert not recent.rolled_up and recent.total.requests == 3
    assert store.prune(T0) == 0  # pruning never moves the boundary back
    assert store.raw_since() == day_start_ms("2026-03-12")


def test_partial_rows_are_kept_and_counted_raw_and_rolled_up(store: Store) -> None:
    # An answer that ended before its last chunk: booked with what it streamed
    # (estimated), marked partial, and counted as such in reports of any age.
    cut = row(T0, request_id="cut", stream=1, partial=1, tokens_estimated=1, tokens_out=10)
    store.write_usage([cut, row(T0 + 1, request_id="whole")])
    store.write_usage([row(T0 + 3 * DAY, request_id="later", partial=1)])
    assert [r.partial for r in store.requests(limit=10)] == [1, 0, 1]
    assert store.requests(limit=10)[-1] == cut
    assert store.report([], 0).total.partial == 2
    assert store.prune(T0 + 2 * DAY) == 2
    rep = store.report(["day"], T0 - DAY)
    assert rep.rolled_up
    assert [(r.group["day"], r.partial) for r in rep.rows] == [
        ("2026-03-10", 1),
        ("2026-03-13", 1),
    ]
    assert rep.as_dict()["total"]["partial"] == 2


def test_vector_points_are_kept_per_row_and_summed_in_reports_and_rollups(store: Store) -> None:
    vec = dict(dialect="qdrant", route="qdrant.upsert", model="docs", backend="",
               upstream_model="", tokens_in=0, tokens_out=0, cost=None, cost_source="")  # fmt: skip
    rows = [row(T0 + i, request_id=f"v{i}", points=p, **vec) for i, p in enumerate((3, 10, 0))]
    rows.append(row(T0 + 3 * DAY, request_id="later", points=5, **vec))
    store.write_usage(rows)
    assert [r.points for r in store.requests(limit=10)] == [5, 0, 10, 3]
    assert store.report(["model"], 0).total.points == 18
    assert store.report(["key"], T0 - DAY).as_dict()["rows"][0]["points"] == 18
    # Pruned raw rows live on in the daily sums, points included.
    assert store.prune(T0 + 2 * DAY) == 3
    rep = store.report(["day"], T0 - DAY)
    assert rep.rolled_up and [(r.group["day"], r.points) for r in rep.rows] == [
        ("2026-03-10", 13), ("2026-03-13", 5)
    ]  # fmt: skip


def test_vector_grants_are_rows_and_each_change_moves_the_access_stamp(store: Store) -> None:
    stamp = store.access_stamp()
    assert store.vector_grants() == {}
    assert store.set_vector_grant("a__docs", "b")
    assert store.set_vector_grant("a__docs", "c")
    assert store.set_vector_grant("x__lib", "b")
    assert store.vector_grants() == {"a__docs": ["b", "c"], "x__lib": ["b"]}
    assert store.access_stamp() != stamp
    stamp = store.access_stamp()
    assert not store.set_vector_grant("a__docs", "b")  # already: nothing to reload
    assert store.access_stamp() == stamp
    assert store.set_vector_grant("a__docs", "b", allow=False)
    assert store.access_stamp() != stamp
    assert not store.set_vector_grant("a__docs", "nobody", allow=False)
    assert store.vector_grants() == {"a__docs": ["c"], "x__lib": ["b"]}


def test_spend_per_key_and_day_feeds_budgets(store: Store) -> None:
    store.write_usage(
        [
            row(T0, key_id="k1", cost=1.0),
            row(T0 + 1, key_id="k1", cost=None, cost_source="unknown"),
            row(T0 + DAY, key_id="k1", cost=0.5),
            row(T0, key_id="k2", cost=2.0),
            row(T0, key_id="", cost=9.0),  # no key: nobody's budget
        ]
    )
    assert store.spend_since("2026-03-10") == {
        "k1": {"2026-03-10": 1.0, "2026-03-11": 0.5},
        "k2": {"2026-03-10": 2.0},
    }
    assert store.spend_since("2026-03-11") == {"k1": {"2026-03-11": 0.5}}


@pytest.mark.parametrize(
    ("period", "start", "end"),
    [
        ("day", "2026-03-10", "2026-03-11"),
        ("week", "2026-03-09", "2026-03-16"),
        ("month", "2026-03-01", "2026-04-01"),
    ],
)
def test_budget_periods_are_calendar_periods_in_utc(period: str, start: str, end: str) -> None:
    assert period_start(period, T0) == start  # type: ignore[arg-type]
    assert period_end_ms(period, T0) == day_start_ms(end)  # type: ignore[arg-type]


def test_december_budgets_end_in_january() -> None:
    assert period_end_ms("month", day_start_ms("2026-12-31")) == day_start_ms("2027-01-01")


# -- stored responses (OpenAI Responses with store: true)


def stored(rid: str, previous: str | None = None, owner: str = "k1", ts: int = T0) -> Any:
    from aistack.store.responses import StoredResponse

    return StoredResponse(
        id=rid, owner=owner, created_at=ts, previous_id=previous, model="qwen3:8b",
        response=f'{{"id": "{rid}"}}', input=f'[{{"id": "in-{rid}"}}]',
    )  # fmt: skip


def test_a_stored_response_is_found_by_its_owner_only(store: Store) -> None:
    from aistack.store.responses import delete_response, get_response, put_response

    put_response(store, stored("resp_1"))
    assert get_response(store, "resp_1", "k1") == stored("resp_1")
    assert get_response(store, "resp_1", "k2") is None
    assert not delete_response(store, "resp_1", "k2")
    assert delete_response(store, "resp_1", "k1")
    assert get_response(store, "resp_1", "k1") is None


def test_a_conversation_is_its_chain_of_previous_responses_oldest_first(store: Store) -> None:
    from aistack.store.responses import chain, put_response

    put_response(store, stored("a"))
    put_response(store, stored("b", "a"))
    put_response(store, stored("c", "b"))
    put_response(store, stored("x", "c", owner="k2"))  # another key continuing it: not its
    assert [r.id for r in chain(store, "c", "k1") or []] == ["a", "b", "c"]
    assert chain(store, "x", "k1") is None
    assert [r.id for r in chain(store, "x", "k2") or []] == ["x"]
    assert chain(store, "nope", "k1") is None


def test_old_stored_responses_are_pruned(store: Store) -> None:
    from aistack.store.responses import get_response, prune_responses, put_response

    put_response(store, stored("old", ts=T0 - 40 * DAY))
    put_response(store, stored("new"))
    assert prune_responses(store, T0 - 30 * DAY) == 1
    assert get_response(store, "old", "k1") is None
    assert get_response(store, "new", "k1") is not None


def test_keys_carry_scopes_and_are_found_by_their_hash(store: Store) -> None:
    store.create_key(key("k1", scopes=("models", "metrics")))
    store.create_key(key("k2", name="frigate"))
    assert store.key_by_hash("hash-of-k1") == key("k1", scopes=("models", "metrics"))
    assert store.key_by_hash("hash-of-k2") is not None
    assert store.key_by_hash("hash-of-nobody") is None
    assert [k.scopes for k in store.list_keys()] == [("models", "metrics"), ()]


def test_every_key_and_session_change_moves_the_access_stamp(store: Store) -> None:
    from aistack.store import SessionRecord

    seen = [store.access_stamp()]

    def moved() -> bool:
        now = store.access_stamp()
        changed = now != seen[-1]
        seen.append(now)
        return changed

    store.create_key(key("k1"))
    assert moved()
    store.revoke_key("k1")
    assert moved()
    assert store.revoke_key("k1") == [] and not moved()  # nothing changed
    s = SessionRecord("sid", "ann", "admin", "master key", (), "fp", T0, T0 + DAY)
    store.create_session(s)
    assert not moved()  # a new session is found by its id; nothing to reload
    assert store.session("sid") == s
    assert store.revoke_session("sid", at=T0 + 1)
    assert moved()
    revoked = store.session("sid")
    assert revoked is not None and revoked.revoked_at == T0 + 1
    assert not store.revoke_session("sid") and not moved()
    assert store.session("nobody") is None


def test_a_sign_in_link_is_used_once_and_stale_ones_are_pruned(store: Store) -> None:
    from aistack.store import SessionRecord

    assert store.use_link("n1", T0 + DAY)
    assert not store.use_link("n1", T0 + DAY)
    assert store.use_link("n2", T0 + 10)
    old = SessionRecord("old", "bob", "viewer", "forward auth", ("ai-viewers",), "", T0, T0 + 5)
    store.create_session(old)
    assert store.session("old") == old  # groups come back as they went in
    assert store.prune_access(now=T0 + 1000) == 1
    assert store.session("old") is None
    assert store.use_link("n2", T0 + 10)  # forgotten once it could never count again
    assert not store.use_link("n1", T0 + DAY)
