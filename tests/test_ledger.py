"""The usage ledger: every answered request is a row, even across a SIGTERM under load, and
`aistack usage` adds up to exactly what was asked."""

from __future__ import annotations

import asyncio
import contextlib
import json
import signal
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import ollama
import openai
import pytest

from aistack.access.ledger import Ledger
from aistack.store import UsageRow, open_store
from tests.faults import FaultServer, openai_canned
from tests.procs import aistack_cli, create_key, running, start_gateway, write_config
from tests.services import postgres_database

MASTER = "ledger-master-" + "l" * 20
ENV = {"TEST_MASTER_KEY": MASTER}
CHAT = [{"role": "user", "content": "hi"}]


@pytest.fixture(scope="module")
def backend() -> Iterator[FaultServer]:
    fs = FaultServer(openai_canned(("canned", "other"))).start()
    yield fs
    fs.stop()


@contextlib.contextmanager
def database(kind: str, tmp: Path) -> Iterator[str]:
    if kind == "sqlite":
        yield str(tmp / "ledger.db")
    else:
        with postgres_database() as url:
            yield url


def count_rows(url: str) -> int:
    store = open_store(url)
    try:
        return store.count_requests()
    finally:
        store.close()


@pytest.mark.parametrize("kind", ["sqlite", "postgres"])
def test_sigterm_during_load_loses_no_row(tmp_path: Path, backend: FaultServer, kind: str) -> None:
    with database(kind, tmp_path) as url:
        cfg: dict[str, object] = {
            "backends": [{"name": "fake", "kind": "openai", "url": f"{backend.url}/v1"}],
            "database_url": url,
            # Nothing is written before the shutdown: it alone must write every row.
            "ledger": {"flush_interval": 120, "batch_size": 100_000},
        }
        gw = start_gateway(tmp_path, cfg, args=["--migrate"])
        answered = 0
        lock = threading.Lock()
        stop_after = 150

        def client() -> None:
            nonlocal answered
            with httpx.Client(base_url=gw.url, timeout=10) as c:
                for i in range(100):  # bounded: at most 800 requests in all
                    try:
                        r = c.post(
                            "/v1/chat/completions" if i % 2 else "/api/chat",
                            json={"model": "canned", "messages": CHAT, "stream": i % 3 == 0},
                        )
                    except httpx.HTTPError:
                        return  # the gateway is going away
                    assert r.status_code == 200
                    with lock:
                        answered += 1

        threads = [threading.Thread(target=client) for _ in range(8)]
        for t in threads:
            t.start()
        deadline = time.monotonic() + 30
        while answered < stop_after and time.monotonic() < deadline:
            time.sleep(0.01)
        assert answered >= stop_after, "the load never got going"
        gw.proc.send_signal(signal.SIGTERM)
        for t in threads:
            t.join(30)
        assert gw.proc.wait(30) == 0, gw.output()[-3000:]
        assert answered < 800, "the load ended before the signal: nothing was tested"
        assert count_rows(url) == answered
        assert "rows written, 0 dropped" in gw.output()


def test_a_full_queue_drops_and_counts_instead_of_blocking(tmp_path: Path) -> None:
    store = open_store(str(tmp_path / "l.db"))
    store.migrate()

    async def main() -> Ledger:
        led = Ledger(store, queue_size=3, flush_interval=60)
        await led.start()
        row = UsageRow(1, "", "", "", "", "openai", "chat", "m", "", "", 0, 200, "", 0, 0, 0,
                       None, 1.0, 0.0, "", 1)  # fmt: skip
        for _ in range(5):
            led.append(row)
        await led.close()
        return led

    led = asyncio.run(main())
    assert (led.written, led.dropped) == (3, 2)
    assert store.count_requests() == 3
    store.close()


def test_a_flush_writes_what_was_queued_and_leaves_later_rows_for_the_next(
    tmp_path: Path,
) -> None:
    """Under a steady load, chasing the rows that arrive during a write kept the writer
    committing a few rows at a time without pause; a flush takes what it found."""
    store = open_store(str(tmp_path / "l.db"))
    store.migrate()

    async def main() -> tuple[Ledger, int]:
        led = Ledger(store, flush_interval=60)
        row = UsageRow(1, "", "", "", "", "openai", "chat", "m", "", "", 0, 200, "", 0, 0, 0,
                       None, 1.0, 0.0, "", 1)  # fmt: skip
        for _ in range(10):
            led.append(row)
        flushing = asyncio.create_task(led.flush())
        await asyncio.sleep(0)  # the flush has taken its rows and waits on the store
        for _ in range(5):
            led.append(row)  # requests answered meanwhile
        assert await flushing
        left = len(led)
        await led.close()
        return led, left

    led, left = asyncio.run(main())
    assert left == 5  # waiting for the next flush, not written by this one
    assert led.written == 15 and store.count_requests() == 15  # and none lost at close
    store.close()


def test_usage_totals_equal_the_requests_made(tmp_path: Path, backend: FaultServer) -> None:
    cfg: dict[str, object] = {
        "backends": [{"name": "fake", "kind": "openai", "url": f"{backend.url}/v1"}],
        "database_url": str(tmp_path / "usage.db"),
        "auth": {"master_key": "${TEST_MASTER_KEY}"},
        "prices": {"canned": {"input": 1.0, "output": 2.0}},
    }
    config = write_config(tmp_path / "cli", cfg)
    paperless = create_key(config, "--name", "paperless", env=ENV)
    frigate = create_key(config, "--name", "frigate", env=ENV)
    made = {
        ("paperless", "canned:latest"): 5,
        ("frigate", "canned:latest"): 2,
        ("frigate", "other:latest"): 3,
    }
    with running(start_gateway(tmp_path, cfg, env=ENV)) as gw:
        keys = {"paperless": paperless, "frigate": frigate}
        for (app, model), n in made.items():
            for i in range(n):
                asked = model.split(":")[0].upper() if i < 2 else model  # spelled three ways
                if i % 2:
                    ollama.Client(gw.url, headers={"Authorization": f"Bearer {keys[app]}"}).chat(
                        model=asked, messages=CHAT
                    )
                else:
                    openai.OpenAI(
                        base_url=f"{gw.url}/v1", api_key=keys[app], max_retries=0
                    ).chat.completions.create(model=asked, messages=CHAT)  # type: ignore[arg-type]
    # The gateway has stopped, so the ledger is complete; the CLI reads the database.
    by_key = json.loads(
        aistack_cli("usage", "--by", "key", "--json", config=config, env=ENV).stdout
    )
    assert {r["app"]: r["requests"] for r in by_key["rows"]} == {"paperless": 5, "frigate": 5}
    assert by_key["total"]["requests"] == 10
    assert by_key["total"]["tokens_in"] == 70 and by_key["total"]["tokens_out"] == 30
    # canned is priced (1 and 2 USD per million); other is on a metered backend, unpriced.
    assert by_key["total"]["cost"] == pytest.approx(7 * (7 * 1 + 3 * 2) / 1e6)
    assert by_key["total"]["cost_unknown"] == 3
    by_model = json.loads(
        aistack_cli("usage", "--by", "model", "--json", config=config, env=ENV).stdout
    )
    # Models by their canonical names, however a client spelled them.
    assert {r["model"]: r["requests"] for r in by_model["rows"]} == {
        "canned:latest": 7,
        "other:latest": 3,
    }
    both = json.loads(
        aistack_cli("usage", "--by", "key,model", "--json", config=config, env=ENV).stdout
    )
    assert {(r["app"], r["model"]): r["requests"] for r in both["rows"]} == made
    table = aistack_cli("usage", "--by", "model", "--since", "1d", config=config, env=ENV)
    assert table.returncode == 0, table.stderr
    lines = table.stdout.splitlines()
    assert lines[1].split()[:2] == ["MODEL", "REQUESTS"]
    assert lines[-1].split()[:2] == ["total", "10"]
    listed = aistack_cli("keys", "list", config=config, env=ENV).stdout
    assert "paperless" in listed and "never" in listed  # no expiry
    assert "T" in listed.splitlines()[1].split()[-1]  # last use is recorded
