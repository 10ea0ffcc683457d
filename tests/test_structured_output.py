"""JSON formats from the embedded engine parse and match their schema, every time.

llama-cpp-python's schema grammar let a string hold raw control characters (a newline
typed into a "poem"), which is not JSON; the engine now uses JSON's own string rules and
checks an answer before it is given as a success. Many schemas, many seeds, streamed
(what the grammar alone guarantees: nothing is held back to be checked) and whole.
"""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import jsonschema
import orjson
import pytest

from tests.conftest import LOCAL_MODEL
from tests.procs import running, start_gateway

# (what to ask for, the schema), each within what the grammar enforces: types,
# properties and required, enum and const, anyOf, items with minItems and maxItems,
# string lengths, integer bounds, patterns, formats (the shape of a date).
SCHEMAS: list[tuple[str, dict[str, object]]] = [
    (
        "Describe a person.",
        {
            "type": "object",
            "properties": {
                "name": {"type": "string", "maxLength": 24},
                "age": {"type": "integer", "minimum": 0, "maximum": 120},
            },
            "required": ["name", "age"],
            "additionalProperties": False,
        },
    ),
    (
        "Write a short poem of several lines.",
        {
            "type": "object",
            "properties": {"poem": {"type": "string", "maxLength": 60}},
            "required": ["poem"],
        },
    ),
    (
        "Pick a colour.",
        {
            "type": "object",
            "properties": {
                "colour": {"enum": ["red", "green", "blue"]},
                "sure": {"type": "boolean"},
            },
            "required": ["colour", "sure"],
        },
    ),
    (
        "List some fruit.",
        {
            "type": "array",
            "items": {"type": "string", "maxLength": 12},
            "minItems": 1,
            "maxItems": 3,
        },
    ),
    (
        "When and how much?",
        {
            "type": "object",
            "properties": {
                "when": {"type": "string", "format": "date"},
                "amount": {"type": "number"},
            },
            "required": ["when", "amount"],
        },
    ),
    (
        "A number or nothing.",
        {
            "anyOf": [
                {"type": "integer", "minimum": -5, "maximum": 5},
                {"type": "object", "properties": {"none": {"type": "null"}}, "required": ["none"]},
            ]
        },
    ),
    (
        "An order with a code.",
        {
            "type": "object",
            "properties": {
                "code": {"type": "string", "pattern": "^[0-9]{3}-[A-Z]{2}$"},
                "tags": {"type": "array", "items": {"const": "x"}, "maxItems": 2},
                "note": {"type": "string", "minLength": 1, "maxLength": 20},
            },
            "required": ["code", "tags", "note"],
        },
    ),
]
SEEDS = [1, 2, 3]


@pytest.fixture(scope="module")
def http(tmp_path_factory: pytest.TempPathFactory) -> Iterator[httpx.Client]:
    cfg = {"backends": [{"name": "local", "kind": "local", "n_ctx": 512, "n_threads": 1}]}
    with (
        running(start_gateway(tmp_path_factory.mktemp("json"), cfg, name="json")) as gw,
        httpx.Client(base_url=gw.url, timeout=300) as c,
    ):
        yield c


def _request(prompt: str, schema: dict[str, object], seed: int, stream: bool) -> dict[str, object]:
    return {
        "model": LOCAL_MODEL,
        "messages": [{"role": "user", "content": prompt}],
        "format": schema,
        "stream": stream,
        # Warm enough to wander into newlines and quotes; small enough to stay quick.
        "options": {"seed": seed, "temperature": 1.2, "num_predict": 96},
    }


def _check(text: str, schema: dict[str, object]) -> None:
    value = orjson.loads(text)  # a JSONDecodeError fails the test with the text
    jsonschema.validate(value, schema)


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize(("prompt", "schema"), SCHEMAS, ids=[p for p, _ in SCHEMAS])
def test_a_streamed_json_answer_parses_and_matches_its_schema(
    http: httpx.Client, prompt: str, schema: dict[str, object], seed: int
) -> None:
    parts: list[str] = []
    with http.stream("POST", "/api/chat", json=_request(prompt, schema, seed, True)) as r:
        assert r.status_code == 200
        for line in r.iter_lines():
            obj = orjson.loads(line)
            assert "error" not in obj, obj
            parts.append(obj["message"]["content"])
            last = obj
    assert last["done"] and last["done_reason"] == "stop", last
    _check("".join(parts), schema)


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize(("prompt", "schema"), SCHEMAS, ids=[p for p, _ in SCHEMAS])
def test_a_whole_json_answer_parses_and_matches_its_schema(
    http: httpx.Client, prompt: str, schema: dict[str, object], seed: int
) -> None:
    r = http.post(
        "/v1/chat/completions",
        json={
            "model": LOCAL_MODEL,
            "messages": [{"role": "user", "content": prompt}],
            "response_format": {
                "type": "json_schema",
                "json_schema": {"name": "x", "schema": schema},
            },
            "seed": seed,
            "temperature": 1.2,
            "max_tokens": 96,
        },
    )
    assert r.status_code == 200, r.text
    choice = r.json()["choices"][0]
    assert choice["finish_reason"] == "stop", choice
    _check(choice["message"]["content"], schema)


@pytest.mark.parametrize("seed", SEEDS)
def test_format_json_answers_one_object_or_says_it_was_cut(http: httpx.Client, seed: int) -> None:
    r = http.post(
        "/api/generate",
        json={
            "model": LOCAL_MODEL,
            "prompt": 'Reply with a tiny JSON object such as {"a": 1}.',
            "format": "json",
            "stream": False,
            "options": {"seed": seed, "temperature": 1.2, "num_predict": 96},
        },
    )
    assert r.status_code == 200, r.text
    body = r.json()
    # Any object, of any size: the model may still be writing one at num_predict, and
    # then says so (as every engine does); one it ended parses.
    if body["done_reason"] == "length":
        assert body["eval_count"] == 96, body
    else:
        assert body["done_reason"] == "stop", body
        assert isinstance(orjson.loads(body["response"]), dict), body
