"""The README's first request, run as written against a gateway with no configuration."""

from __future__ import annotations

import json
import os
import re
import signal
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
    # The README's request sets no token limit, so how long the whole answer takes is
    # the model's choice (up to its 4096-token context: minutes on a busy machine). What
    # the README promises is checked as the lines arrive: it streams, one Ollama object
    # a line, the first from the assistant. After a few lines (or the last, if it comes
    # first) the command is stopped, as a reader who has seen it work would.
    proc = subprocess.Popen(["bash", "-c", cmd], stdout=subprocess.PIPE, text=True,
                            start_new_session=True)  # fmt: skip
    lines: list[dict[str, object]] = []
    try:
        assert proc.stdout is not None
        for raw in proc.stdout:
            lines.append(json.loads(raw))
            if lines[-1]["done"] or len(lines) >= 12:
                break
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(60)
    assert len(lines) > 2
    assert all(line["model"] == "smollm2:135m" for line in lines)
    first = lines[0]
    assert not first["done"] and first["message"]["role"] == "assistant"  # type: ignore[index]
    assert all(not line["done"] for line in lines[:-1])
    if lines[-1]["done"]:
        assert lines[-1]["done_reason"] in ("stop", "length")
    assert "".join(str(line["message"]["content"]) for line in lines).strip()  # type: ignore[index]


def test_zero_config_lists_the_embedded_model(bare: Proc) -> None:
    import httpx

    tags = httpx.get(f"{bare.url}/api/tags").json()
    assert [m["name"] for m in tags["models"]] == ["smollm2:135m"]
    assert "config: embedded default" in bare.output()
