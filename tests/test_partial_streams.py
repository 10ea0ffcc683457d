"""Streams are charged for what was streamed: an answer that ends before its last chunk
(its client went away, its backend broke) is booked with the tokens streamed until then,
estimated and marked partial, so a key's tokens per minute and budget cannot be escaped
by leaving early.

A gateway process in front of tests/fake_ollama.py, whose streams stop after a set
number of chunks (about a token each) and wait there for their caller to leave.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from tests.fake_ollama import FakeOllama
from tests.procs import Proc, aistack_cli, create_key, running, start_gateway, write_config

MASTER = "partial-master-" + "p" * 20
MODEL = "llama3.2:1b"
CHAT = [{"role": "user", "content": "tell me a long story"}]
CHUNKS = 10


@dataclass
class Gw:
    proc: Proc
    box: FakeOllama
    config: Path
    tight: str  # a key with a small tokens-per-minute limit

    @property
    def url(self) -> str:
        return self.proc.url

    def rows(self, **q: str) -> list[dict[str, object]]:
        r = httpx.get(
            f"{self.url}/admin/api/requests",
            params=q,
            headers={"Authorization": f"Bearer {MASTER}"},
            timeout=30,
        )
        assert r.status_code == 200, r.text
        return list(r.json()["requests"])


@pytest.fixture(scope="module")
def gw(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gw]:
    tmp = tmp_path_factory.mktemp("partial")
    box = FakeOllama(stream_chunks=1000, stall_after=CHUNKS)
    box.add(MODEL)
    box.start()
    cfg = {
        "backends": [{"name": "box", "kind": "ollama", "url": box.url, "models": [MODEL]}],
        "database_url": str(tmp / "ledger.db"),
        "auth": {"master_key": MASTER},
    }
    config = write_config(tmp / "cfg", cfg)
    # 60 tokens a minute: about five streams cut after 10 chunks.
    tight = create_key(config, "--name", "tight", "--tpm", "60")
    try:
        with running(start_gateway(tmp, cfg)) as p:
            yield Gw(p, box, config, tight)
    finally:
        box.stop()


def cut_after(gw: Gw, path: str, body: dict[str, object], key: str, chunks: int) -> int:
    """Stream, read `chunks` chunks with text, hang up; the status (a 429 reads none)."""
    headers = {"Authorization": f"Bearer {key}"}
    with httpx.stream("POST", f"{gw.url}{path}", json=body, headers=headers, timeout=60) as r:
        if r.status_code != 200:
            r.read()
            return r.status_code
        seen = 0
        for line in r.iter_lines():
            if "tok " in line:
                seen += 1
                if seen == chunks:
                    break
        assert seen == chunks
    return 200


def wait_rows(gw: Gw, n: int, **q: str) -> list[dict[str, object]]:
    """The ledger's rows once there are `n` (the gateway books a cut when it notices it)."""
    import time

    deadline = time.monotonic() + 60
    while True:
        rows = gw.rows(**q)
        if len(rows) >= n:
            return rows
        assert time.monotonic() < deadline, f"{len(rows)} rows, expected {n}"
        time.sleep(0.05)


@pytest.mark.parametrize(
    ("dialect", "path", "body"),
    [
        ("ollama", "/api/chat", {"model": MODEL, "messages": CHAT}),
        ("openai", "/v1/chat/completions", {"model": MODEL, "messages": CHAT, "stream": True}),
    ],
)
def test_a_stream_cut_by_its_client_after_10_chunks_is_booked_with_10_chunks_tokens(
    gw: Gw, dialect: str, path: str, body: dict[str, object]
) -> None:
    before = len(gw.rows(model=MODEL))
    assert cut_after(gw, path, body, MASTER, CHUNKS) == 200
    row = wait_rows(gw, before + 1, model=MODEL)[0]  # newest first
    assert (row["dialect"], row["status"], row["error"]) == (dialect, 499, "CLIENT_CLOSED")
    # The backend counts only at the end, so the gateway estimated what was streamed:
    # about a token a chunk, and the prompt.
    assert row["tokens_out"] == CHUNKS
    assert row["tokens_in"] == len(CHAT[0]["content"]) // 4
    assert (row["partial"], row["tokens_estimated"], row["stream"]) == (1, 1, 1)


def test_a_whole_stream_is_not_partial(gw: Gw) -> None:
    body = {"model": MODEL, "messages": CHAT, "options": {"num_predict": 3}}
    before = len(gw.rows(model=MODEL))
    gw.box.stall_after = None
    gw.box.stream_chunks = 5
    try:
        r = httpx.post(
            f"{gw.url}/api/chat",
            json=body,
            headers={"Authorization": f"Bearer {MASTER}"},
            timeout=60,
        )
        assert r.status_code == 200
        assert json.loads(r.text.splitlines()[-1])["done"] is True
    finally:
        gw.box.stream_chunks, gw.box.stall_after = 1000, CHUNKS
    row = wait_rows(gw, before + 1, model=MODEL)[0]
    assert (row["status"], row["partial"], row["tokens_out"]) == (200, 0, 5)


def test_a_tpm_limit_holds_across_streams_cut_early(gw: Gw) -> None:
    # Each cut stream is booked 15 tokens (10 streamed, the prompt's 5): a key allowed
    # 60 a minute is refused after four or so of them, where a stream abandoned before
    # its last chunk once cost nothing and the key was never refused.
    body = {"model": MODEL, "messages": CHAT, "stream": True}
    statuses: list[int] = []
    for i in range(12):
        status = cut_after(gw, "/v1/chat/completions", body, gw.tight, CHUNKS)
        statuses.append(status)
        if status == 429:
            break
        wait_rows(gw, i + 1, app="tight")  # booked (and charged) before the next
    assert statuses[-1] == 429, statuses
    admitted = len(statuses) - 1
    assert 4 <= admitted <= 7, statuses
    rows = gw.rows(app="tight")
    cut = [r for r in rows if r["partial"]]
    assert len(cut) == admitted
    assert sum(int(r["tokens_in"]) + int(r["tokens_out"]) for r in cut) >= 60  # type: ignore[call-overload]


def test_usage_reports_count_partial_rows(gw: Gw) -> None:
    before = len(gw.rows(model=MODEL))
    assert cut_after(gw, "/api/chat", {"model": MODEL, "messages": CHAT}, MASTER, 2) == 200
    wait_rows(gw, before + 1, model=MODEL)  # booked, and the ledger flushed
    out = aistack_cli("usage", "--by", "key", "--json", config=gw.config)
    assert out.returncode == 0, out.stderr
    total = json.loads(out.stdout)["total"]
    assert total["partial"] >= 1
    table = aistack_cli("usage", "--by", "model", config=gw.config)
    assert table.returncode == 0 and "PARTIAL" in table.stdout
    assert "partial: answers that ended before their last chunk" in table.stdout
