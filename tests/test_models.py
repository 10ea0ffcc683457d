"""Model names as Ollama compares them, and the catalog that resolves them to backends."""

from __future__ import annotations

import asyncio

import pytest

from aistack.backends.base import Backend
from aistack.core.errors import ErrorKind, GatewayError
from aistack.core.models import ModelCard, canonical, check_name, close_matches
from aistack.routing.catalog import Catalog


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("llama3.2", "llama3.2:latest"),
        ("Llama3.2:LATEST", "llama3.2:latest"),
        ("registry.ollama.ai/library/llama3.2:1b", "llama3.2:1b"),
        ("library/qwen3:4b", "qwen3:4b"),
        ("hf.co/bartowski/Model-GGUF:Q4_K_M", "hf.co/bartowski/model-gguf:q4_k_m"),
        ("openai/gpt-oss-20b", "openai/gpt-oss-20b:latest"),
        ("localhost:5000/ns/model", "localhost:5000/ns/model:latest"),
        ("meta-llama/llama-3.1-8b-instruct:free", "meta-llama/llama-3.1-8b-instruct:free"),
    ],
)
def test_canonical_names(name: str, expected: str) -> None:
    assert canonical(name) == expected


@pytest.mark.parametrize("name", ["model:", "a//b", "-bad", "a:b c"])
def test_invalid_names(name: str) -> None:
    with pytest.raises(GatewayError) as e:
        check_name(name)
    assert e.value.kind is ErrorKind.INVALID_REQUEST


@pytest.mark.parametrize("name", ["llama3.2", "hf.co/org/m:Q4", "localhost:5000/ns/m:1", "a_b"])
def test_valid_names(name: str) -> None:
    check_name(name)


def test_close_matches_prefer_the_same_base_and_the_ollama_form() -> None:
    names = ["gpt-oss:20b", "gpt-oss:120b", "qwen3:4b-instruct", "llama3.2:latest"]
    assert close_matches("gpt-oss:7b", names)[:2] == ["gpt-oss:20b", "gpt-oss:120b"]
    assert "gpt-oss:20b" in close_matches("openai/gpt-oss-20b", names)
    assert close_matches("llama3.2", names) == []  # it exists: nothing to suggest


class Listing(Backend):
    """A backend double that only lists (the catalog needs nothing else)."""

    kind = "test"

    def __init__(self, name: str, models: list[str], fail: bool = False) -> None:
        super().__init__(name)
        self.models = models
        self.fail = fail
        self.calls = 0

    async def list_models(self) -> list[ModelCard]:
        self.calls += 1
        if self.fail:
            raise GatewayError(ErrorKind.UPSTREAM_UNREACHABLE, "down")
        return [ModelCard(name=m, backend=self.name) for m in self.models]


def test_catalog_resolves_aliases_declared_and_discovered_models() -> None:
    voice = Listing("voice", ["qwen3:4b-instruct"])
    reason = Listing("reason", [], fail=True)
    cloud = Listing("openrouter", ["never-asked"])
    cat = Catalog(
        [voice, reason, cloud],
        declared={"reason": ["gpt-oss:20b"], "openrouter": ["openai/gpt-oss-20b"]},
        discover={"openrouter": False},
        aliases={"reason": "gpt-oss:20b", "deep": "reason", "Voice": "qwen3:4b-instruct"},
    )
    asyncio.run(cat.refresh())
    assert cloud.calls == 0
    assert [d.backend.name for d in cat.resolve("deep")] == ["reason"]
    assert cat.resolve("voice")[0].model == "qwen3:4b-instruct"
    assert cat.resolve("QWEN3:4b-instruct")[0].backend is voice
    assert cat.resolve("openai/gpt-oss-20b")[0].model == "openai/gpt-oss-20b"
    assert cat.states["reason"].error == "down"
    listed = {m.name: m for m in cat.listed()}
    assert listed["deep:latest"].alias_of == "gpt-oss:20b"
    assert set(listed) >= {"qwen3:4b-instruct", "gpt-oss:20b", "openai/gpt-oss-20b:latest"}


def test_the_same_model_on_two_backends_lists_once_with_both() -> None:
    a = Listing("a", ["llama3.2:latest"])
    b = Listing("b", ["Llama3.2"])
    cat = Catalog([a, b])
    asyncio.run(cat.refresh())
    (m,) = cat.listed()
    assert m.backends == ("a", "b")
    assert [d.backend.name for d in cat.resolve("llama3.2")] == ["a", "b"]


def test_a_miss_asks_the_backends_again_then_names_close_matches() -> None:
    a = Listing("a", [])
    cat = Catalog([a])

    async def go() -> None:
        await cat.refresh()
        a.models = ["phi4:14b"]
        cat._refreshed_at -= 10  # the last round is old enough to ask again
        assert (await cat.lookup("phi4:14b"))[0].model == "phi4:14b"
        with pytest.raises(GatewayError) as e:
            await cat.lookup("phi4:4b")
        assert e.value.kind is ErrorKind.NOT_FOUND and "phi4:14b" in e.value.message

    asyncio.run(go())
