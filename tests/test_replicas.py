"""Several replicas, one truth: two gateway processes sharing PostgreSQL and Redis.

The database is upgraded once with `aistack db upgrade` (as a deploy job would); a key
with a requests-per-minute limit is then enforced across both replicas together: the
request over the limit gets 429 whichever replica it reaches.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import ollama
import openai
import pytest

from tests.faults import FaultServer, openai_canned
from tests.procs import (
    Proc,
    aistack_cli,
    create_key,
    running,
    start_gateway,
    write_config,
)
from tests.services import postgres_database

MASTER = "replica-master-" + "r" * 20
ENV = {"TEST_MASTER_KEY": MASTER}
CHAT = [{"role": "user", "content": "hi"}]


@dataclass
class Pair:
    a: Proc
    b: Proc
    key: str
    agent: str  # keys without limits, for the stored-responses test
    other: str
    backend: FaultServer


@pytest.fixture(scope="module")
def pair(tmp_path_factory: pytest.TempPathFactory, redis_target: tuple[str, str]) -> Iterator[Pair]:
    redis_url, prefix = redis_target
    tmp = tmp_path_factory.mktemp("replicas")
    backend = FaultServer(openai_canned()).start()
    try:
        with postgres_database() as pg:
            cfg: dict[str, object] = {
                "backends": [{"name": "fake", "kind": "openai", "url": f"{backend.url}/v1"}],
                "database_url": pg,
                "redis_url": redis_url,
                "limits": {"redis_prefix": prefix},
                "auth": {"master_key": "${TEST_MASTER_KEY}"},
            }
            config = write_config(tmp / "cli", cfg)
            # A replica never changes a shared schema by itself.
            with pytest.raises(RuntimeError, match=r"aistack db upgrade"):
                start_gateway(tmp, cfg, name="too-early", env=ENV)
            behind = aistack_cli("db", "status", config=config, env=ENV)
            assert behind.returncode == 3 and "behind" in behind.stdout
            up = aistack_cli("db", "upgrade", config=config, env=ENV)
            assert up.returncode == 0, up.stderr
            assert "applied 1:" in up.stdout
            again = aistack_cli("db", "upgrade", config=config, env=ENV)
            assert "applied" not in again.stdout  # idempotent
            now = aistack_cli("db", "status", config=config, env=ENV)
            assert now.returncode == 0 and "up to date" in now.stdout
            key = create_key(config, "--name", "shared", "--rpm", "3", env=ENV)
            agent = create_key(config, "--name", "agent", env=ENV)
            other = create_key(config, "--name", "other", env=ENV)
            with (
                running(start_gateway(tmp, cfg, name="a", env=ENV)) as a,
                running(start_gateway(tmp, cfg, name="b", env=ENV)) as b,
            ):
                yield Pair(a, b, key, agent, other, backend)
    finally:
        backend.stop()


def test_one_rpm_limit_holds_across_two_replicas(pair: Pair) -> None:
    def oll(p: Proc) -> ollama.Client:
        return ollama.Client(host=p.url, headers={"Authorization": f"Bearer {pair.key}"})

    def oai(p: Proc) -> openai.OpenAI:
        return openai.OpenAI(base_url=f"{p.url}/v1", api_key=pair.key, max_retries=0)

    oll(pair.a).chat(model="canned", messages=CHAT)
    oai(pair.b).chat.completions.create(model="canned", messages=CHAT)  # type: ignore[arg-type]
    oll(pair.a).chat(model="canned", messages=CHAT)
    # Three used between them; each replica alone would still allow more.
    with pytest.raises(ollama.ResponseError) as oe:
        oll(pair.b).chat(model="canned", messages=CHAT)
    assert oe.value.status_code == 429
    with pytest.raises(openai.RateLimitError) as ae:
        oai(pair.a).chat.completions.create(model="canned", messages=CHAT)  # type: ignore[arg-type]
    assert int(ae.value.response.headers["retry-after"]) >= 1
    assert "3 requests per minute" in ae.value.message


def test_previous_response_id_works_on_the_other_replica_for_its_own_key_only(
    pair: Pair,
) -> None:
    import json

    def oai(p: Proc, key: str) -> openai.OpenAI:
        return openai.OpenAI(base_url=f"{p.url}/v1", api_key=key, max_retries=0)

    first = oai(pair.a, pair.agent).responses.create(model="canned", input="My name is Ada.")
    assert first.output_text == "ok" and first.store
    # The next turn reaches the other replica at once; it finds the first in the database.
    second = oai(pair.b, pair.agent).responses.create(
        model="canned", input="What is my name?", previous_response_id=first.id
    )
    sent = json.loads(pair.backend.requests[-1].partition(b"\r\n\r\n")[2])
    assert [m["content"] for m in sent["messages"]] == ["My name is Ada.", "ok", "What is my name?"]
    assert second.previous_response_id == first.id
    assert oai(pair.b, pair.agent).responses.retrieve(first.id).output_text == "ok"
    items = oai(pair.a, pair.agent).responses.input_items.list(second.id)
    assert [i.type for i in items.data] == ["message"]
    # Another key's view: there is no such response.
    with pytest.raises(openai.NotFoundError):
        oai(pair.a, pair.other).responses.retrieve(first.id)
    with pytest.raises(openai.BadRequestError, match="not found"):
        oai(pair.b, pair.other).responses.create(
            model="canned", input="hi", previous_response_id=first.id
        )
    assert oai(pair.b, pair.agent).responses.delete(first.id) is None
    with pytest.raises(openai.NotFoundError):
        oai(pair.a, pair.agent).responses.retrieve(first.id)
