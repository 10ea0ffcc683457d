"""The README's first request, run as written against a gateway with no configuration."""

from __future__ import annotations

import json
import re
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.procs import Proc, running, start_gateway


@pytest.fixture(scope="module")
def bare(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Proc]:
    # No --config, no $AISTACK_CONFIG, no ./aistack.yaml: the embedded default.
    with running(start_gateway(tmp_path_factory.mktemp("bare"), None, name="bare")) as gw:
        yield gw


def _readme_blocks(root: Path) -> list[str]:
    text = (root / "README.md").read_text()
    return re.findall(r"```(?:sh|bash|console)\n(.*?)```", text, re.S)


def test_readme_quick_start_names_the_two_commands(repo_root: Path) -> None:
    blocks = _readme_blocks(repo_root)
    assert any("make serve" in b for b in blocks)
    assert any("make test" in b for b in blocks)


def test_the_first_request_streams_an_answer(repo_root: Path, bare: Proc) -> None:
    (curl,) = [b for b in _readme_blocks(repo_root) if "curl" in b and "/api/chat" in b]
    assert "smollm2:135m" in curl
    cmd = curl.replace("http://127.0.0.1:8434", bare.url)
    # The README's request sets no token limit: on a busy machine the whole answer can
    # take minutes (pytest's own timeout is 300 s).
    out = subprocess.run(["bash", "-c", cmd], capture_output=True, text=True, timeout=280)
    assert out.returncode == 0, out.stderr
    lines = [json.loads(line) for line in out.stdout.splitlines()]
    assert len(lines) > 2
    assert all(line["model"] == "smollm2:135m" for line in lines)
    assert not lines[0]["done"] and lines[0]["message"]["role"] == "assistant"
    assert lines[-1]["done"] and lines[-1]["done_reason"] in ("stop", "length")
    assert "".join(line["message"]["content"] for line in lines).strip()


def test_zero_config_lists_the_embedded_model(bare: Proc) -> None:
    import httpx

    tags = httpx.get(f"{bare.url}/api/tags").json()
    assert [m["name"] for m in tags["models"]] == ["smollm2:135m"]
    assert "config: embedded default" in bare.output()
