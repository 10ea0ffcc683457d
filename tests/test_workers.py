"""`server.workers: 2`: one port, two processes under a supervisor, one truth.

The gateway runs as `aistack serve` would in production with two workers (a supervisor,
two worker processes on one port through SO_REUSEPORT). Every answer names the worker
that gave it (`x-aistack-worker`), so the tests can see that both took part: limits
are kept in the workers' shared table (no Redis), a key revoked through one worker is
refused by the other within a second, /metrics counts both, and a worker that dies is
started again.
"""

from __future__ import annotations

import http.client
import json
import os
import signal
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.faults import FaultServer, openai_canned
from tests.procs import Proc, aistack_cli, running, start_gateway, write_config

MASTER = "workers-master-" + "w" * 20
ENV = {"TEST_MASTER_KEY": MASTER}
BODY = json.dumps({"model": "canned", "messages": [{"role": "user", "content": "hi"}]})


@dataclass
class House:
    gw: Proc
    config: Path
    env: dict[str, str]
    port: int


def _key(h: House, *args: str) -> dict[str, str]:
    out = aistack_cli("keys", "create", "--json", *args, config=h.config, env=h.env)
    assert out.returncode == 0, out.stderr
    return dict(json.loads(out.stdout))


@pytest.fixture(scope="module")
def house(tmp_path_factory: pytest.TempPathFactory) -> Iterator[House]:
    tmp = tmp_path_factory.mktemp("workers")
    backend = FaultServer(openai_canned()).start()
    env = {**ENV, "XDG_DATA_HOME": str(tmp / "gw" / "data")}
    cfg: dict[str, object] = {
        "server": {"workers": 2},
        "backends": [{"name": "fake", "kind": "openai", "url": f"{backend.url}/v1"}],
        "auth": {"master_key": "${TEST_MASTER_KEY}", "watch": 0.5},
        "vectors": {"enabled": False},
    }
    try:
        config = write_config(tmp / "cli", cfg)
        with running(start_gateway(tmp, cfg, env=env)) as gw:
            port = int(gw.url.rsplit(":", 1)[1])
            h = House(gw, config, env, port)
            _until_both(h)  # both workers listening before any test counts on it
            yield h
            assert gw.stop() == 0, gw.output()  # SIGTERM reached both, each stopped cleanly
    finally:
        backend.stop()


def _post(h: House, key: str, conn: http.client.HTTPConnection | None = None) -> tuple[int, str]:
    """One chat request (on a fresh connection unless given one): status, worker."""
    c = conn or http.client.HTTPConnection("127.0.0.1", h.port, timeout=30)
    try:
        c.request(
            "POST",
            "/v1/chat/completions",
            BODY,
            {"Authorization": f"Bearer {key}", "Content-Type": "application/json"},
        )
        r = c.getresponse()
        r.read()
        return r.status, r.headers.get("x-aistack-worker", "")
    finally:
        if conn is None:
            c.close()


def _connection_to(h: House, worker: str) -> http.client.HTTPConnection:
    """A keep-alive connection that the kernel gave to `worker`."""
    for _ in range(200):
        c = http.client.HTTPConnection("127.0.0.1", h.port, timeout=30)
        c.request("GET", "/api/version")
        r = c.getresponse()
        r.read()
        if r.headers.get("x-aistack-worker") == worker:
            return c
        c.close()
    raise AssertionError(f"no connection reached worker {worker} in 200 tries")


def _until_both(h: House, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    seen: set[str] = set()
    while seen != {"0", "1"}:
        assert time.monotonic() < deadline, f"only workers {seen} answer"
        try:
            c = http.client.HTTPConnection("127.0.0.1", h.port, timeout=5)
            c.request("GET", "/api/version")
            r = c.getresponse()
            r.read()
            c.close()
            seen.add(r.headers.get("x-aistack-worker", ""))
        except OSError:
            time.sleep(0.05)


def test_every_answer_names_one_of_the_workers(house: House) -> None:
    with pytest.raises(AssertionError):  # no such worker
        _connection_to(house, "2")
    _connection_to(house, "0").close()
    _connection_to(house, "1").close()


def test_an_rpm_limit_of_10_across_two_workers_admits_10_not_20(house: House) -> None:
    key = _key(house, "--name", "rpm10", "--rpm", "10")["key"]
    start = time.monotonic()
    with ThreadPoolExecutor(8) as pool:  # each on its own connection: both workers get some
        got = list(pool.map(lambda _: _post(house, key), range(40)))
    elapsed = time.monotonic() - start
    statuses = sorted(s for s, _ in got)
    assert set(statuses) <= {200, 429}, statuses
    assert {w for _, w in got} == {"0", "1"}, got  # both workers answered (and refused)
    admitted = statuses.count(200)
    # A minute's 10 at once, then one every 6 s (GCRA): however slow the machine was.
    assert 10 <= admitted <= 10 + int(elapsed / 6), (admitted, elapsed, got)
    # Each worker alone would have admitted 10: the refusals came from both.
    assert {w for s, w in got if s == 429} == {"0", "1"}, got


def test_a_key_revoked_on_one_worker_is_refused_by_the_other_within_a_second(
    house: House,
) -> None:
    made = _key(house, "--name", "revoked")
    key, key_id = made["key"], made["id"]
    a, b = _connection_to(house, "0"), _connection_to(house, "1")
    try:
        assert _post(house, key, a) == (200, "0")
        assert _post(house, key, b) == (200, "1")  # worker 1 has the key in its table now
        admin = {"Authorization": f"Bearer {MASTER}"}
        a.request("DELETE", f"/admin/api/keys/{key_id}", headers=admin)
        r = a.getresponse()
        r.read()
        assert r.status == 200 and r.headers["x-aistack-worker"] == "0"
        revoked = time.monotonic()
        deadline = revoked + 30  # generous, so a failure says how long it really took
        while (status := _post(house, key, b)) == (200, "1"):
            assert time.monotonic() < deadline, "worker 1 still accepts the revoked key"
            time.sleep(0.02)
        took = time.monotonic() - revoked
        assert status == (401, "1")
        assert took <= 1.0, f"refused by the other worker after {took:.2f}s"
    finally:
        a.close()
        b.close()


def _scrape(h: House) -> str:
    c = http.client.HTTPConnection("127.0.0.1", h.port, timeout=30)
    c.request("GET", "/metrics", headers={"Authorization": f"Bearer {MASTER}"})
    r = c.getresponse()
    text = r.read().decode()
    c.close()
    assert r.status == 200, text
    return text


def _chat_count(text: str, app: str) -> float:
    return sum(
        float(line.rsplit(" ", 1)[1])
        for line in text.splitlines()
        if line.startswith("aistack_requests_total{") and f'app="{app}"' in line
    )


def test_metrics_count_every_workers_requests(house: House) -> None:
    key = _key(house, "--name", "counted")["key"]
    got = [_post(house, key) for _ in range(20)]
    assert {w for _, w in got} == {"0", "1"}
    assert all(s == 200 for s, _ in got)
    for _ in range(4):  # whichever worker answers the scrape, it holds both workers' counts
        text = _scrape(house)
        assert _chat_count(text, "counted") == 20
        assert 'aistack_workers_scraped{of="2"} 2' in text
        assert 'aistack_info{version="' in text and 'worker="1"' in text  # gauges per worker
    # Both workers' ledgers write to the one SQLite file: 20 rows, not 10 (each worker
    # writes its own on its own schedule; a report flushes only the worker it reaches).
    deadline = time.monotonic() + 60
    while (rows := _ledger_rows(house, "counted")) != 20:
        assert rows < 20 and time.monotonic() < deadline, rows
        time.sleep(0.2)


def _ledger_rows(h: House, app: str) -> int:
    c = http.client.HTTPConnection("127.0.0.1", h.port, timeout=30)
    c.request("GET", "/admin/api/usage?by=key", headers={"Authorization": f"Bearer {MASTER}"})
    r = c.getresponse()
    rep = json.loads(r.read())
    c.close()
    return sum(int(row["requests"]) for row in rep["rows"] if app in row.values())


def _workers(h: House) -> list[int]:
    pid = h.gw.proc.pid
    kids = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    return [int(k) for k in kids]


def test_a_worker_that_dies_is_started_again(house: House) -> None:
    before = _workers(house)
    assert len(before) == 2
    os.kill(before[1], signal.SIGKILL)
    deadline = time.monotonic() + 60
    while True:
        now = _workers(house)
        if len(now) == 2 and before[1] not in now:
            break
        assert time.monotonic() < deadline, f"workers {now} after killing {before[1]}"
        time.sleep(0.05)
    assert before[0] in now  # the other went on serving
    _until_both(house)
    key = _key(house, "--name", "after-restart")["key"]
    assert _post(house, key, _connection_to(house, "0"))[0] == 200
    assert _post(house, key, _connection_to(house, "1"))[0] == 200


TWO_WORKERS_NO_BACKENDS: dict[str, object] = {
    "server": {"workers": 2},
    "backends": [],
    "vectors": {"enabled": False},
}


def _workers_of(gw: Proc, deadline: float) -> list[str]:
    """The supervisor's two worker pids, once both are started."""
    pid = gw.proc.pid
    while len(kids := Path(f"/proc/{pid}/task/{pid}/children").read_text().split()) < 2:
        assert time.monotonic() < deadline, kids
        time.sleep(0.05)
    return kids


def test_workers_stop_when_their_supervisor_is_killed(tmp_path: Path) -> None:
    cfg = dict(TWO_WORKERS_NO_BACKENDS)
    with running(start_gateway(tmp_path, cfg, name="orphans")) as gw:
        deadline = time.monotonic() + 60
        kids = _workers_of(gw, deadline)
        gw.proc.kill()  # no chance to stop them
        gw.proc.wait()
        for kid in kids:
            while Path(f"/proc/{kid}").exists() and "zombie" not in _state(int(kid)):
                assert time.monotonic() < deadline, f"worker {kid} outlived its supervisor"
                time.sleep(0.05)


def _state(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/status").read_text().split("State:")[1].split("\n")[0]
    except (OSError, IndexError):
        return "zombie"


def test_a_worker_killed_by_a_signal_makes_the_supervisor_exit_128_plus_it(
    tmp_path: Path,
) -> None:
    cfg = dict(TWO_WORKERS_NO_BACKENDS)
    with running(start_gateway(tmp_path, cfg, name="signalled")) as gw:
        deadline = time.monotonic() + 60
        kids = _workers_of(gw, deadline)
        # Both serving (their SIGTERM handlers set): a worker still importing dies of it.
        _until_both(House(gw, tmp_path, {}, int(gw.url.rsplit(":", 1)[1])))
        stuck, other = int(kids[0]), int(kids[1])
        os.kill(stuck, signal.SIGSTOP)  # it cannot act on the SIGTERM the supervisor passes on
        gw.proc.send_signal(signal.SIGTERM)
        # The other worker stopping says the supervisor is stopping (only it signals them).
        while "zombie" not in _state(other):
            assert time.monotonic() < deadline, f"worker {other} never told to stop"
            time.sleep(0.05)
        os.kill(stuck, signal.SIGKILL)  # killed while the supervisor waits for it
        code = gw.proc.wait(60)
        out = gw.output()
    assert code == 128 + signal.SIGKILL, out
    assert "killed by SIGKILL" in out, out
