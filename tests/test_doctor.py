"""`aistack doctor` against real backends: the runbook's checks and their exit code.

The instances are the session's real processes: an aistack process serving the Ollama
dialect (`upstream`), llama-cpp-python's OpenAI-compatible server, and the embedded
model; a dead backend is a port nobody listens on.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from aistack.doctor.urls import missing_model_fix, url_problem
from tests.cli import aistack, write_config
from tests.conftest import LLAMACPP_MODEL, UPSTREAM_MODEL, Stack
from tests.procs import free_port


@pytest.fixture(autouse=True)
def _own_data_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The default SQLite database lives under $XDG_DATA_HOME: this test's, not the user's."""
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "data"))


def _fails(report: dict[str, object]) -> set[tuple[str, str]]:
    return {
        (f["check"], f["target"])
        for f in report["findings"]  # type: ignore[attr-defined]
        if f["status"] in ("FAIL", "WARN")
    }


def test_doctor_reports_exactly_the_three_problems(stack: Stack, tmp_path: Path) -> None:
    cfg = write_config(
        tmp_path / "aistack.yaml",
        {"backends": [
            {"name": "up", "kind": "ollama", "url": stack.upstream.url,
             "models": [UPSTREAM_MODEL, "ghost:7b"]},
            {"name": "dead", "kind": "ollama", "url": f"http://127.0.0.1:{free_port()}",
             "models": ["qwen3:8b"]},
            {"name": "wrongurl", "kind": "ollama", "url": f"{stack.upstream.url}/v1",
             "models": [UPSTREAM_MODEL]},
        ]},
    )  # fmt: skip
    out = aistack("doctor", "--json", "--no-embedded", config=cfg)
    assert out.returncode == 1, out.stdout + out.stderr
    report = json.loads(out.stdout)
    assert _fails(report) == {
        ("url", "wrongurl"),
        ("reachable", "dead"),
        ("declared", "up/ghost:7b"),
    }
    by = {(f["check"], f["target"]): f for f in report["findings"]}
    assert by[("url", "wrongurl")]["fix"] == f"url: {stack.upstream.url}"
    assert "backends[1].url" in by[("reachable", "dead")]["fix"]
    assert by[("declared", "up/ghost:7b")]["fix"].startswith(
        "aistack models pull ghost:7b --instance up"
    )
    assert by[("reachable", "up")]["status"] == "PASS"
    answered = by[("answers", f"up/{UPSTREAM_MODEL}")]
    assert answered["status"] == "PASS" and answered["seconds"] > 0
    assert report["summary"]["fail"] == 3 and report["summary"]["warn"] == 0

    # The table: one row each, and the fix under each failure.
    out = aistack("doctor", "--no-embedded", config=cfg)
    assert out.returncode == 1
    text = out.stdout
    assert text.count("      fix: ") == 3
    assert f"fix: url: {stack.upstream.url}" in text
    assert "3 failed, 0 warnings" in text


def test_doctor_on_a_healthy_stack_exits_zero(stack: Stack, tmp_path: Path) -> None:
    cfg = write_config(
        tmp_path / "aistack.yaml",
        {"backends": [
            {"name": "up", "kind": "ollama", "url": stack.upstream.url,
             "models": [UPSTREAM_MODEL]},
            {"name": "llamacpp", "kind": "openai", "url": f"{stack.llama.url}/v1",
             "models": [LLAMACPP_MODEL]},
        ],
         "aliases": {"tiny": UPSTREAM_MODEL},
         "routing": {"models": {UPSTREAM_MODEL: {"fallbacks": [LLAMACPP_MODEL]}}}},
    )  # fmt: skip
    out = aistack("doctor", "--json", "--gateway", stack.url, config=cfg)
    assert out.returncode == 0, out.stdout + out.stderr
    report = json.loads(out.stdout)
    assert report["ok"] and report["summary"]["fail"] == 0 and report["summary"]["warn"] == 0
    status = {(f["check"], f["target"]): f["status"] for f in report["findings"]}
    assert status[("reachable", "up")] == status[("reachable", "llamacpp")] == "PASS"
    assert status[("answers", f"up/{UPSTREAM_MODEL}")] == "PASS"
    assert status[("answers", f"llamacpp/{LLAMACPP_MODEL}")] == "PASS"
    assert status[("alias", "tiny")] == "PASS"
    assert status[("fallback", f"{UPSTREAM_MODEL} -> {LLAMACPP_MODEL}")] == "PASS"
    # The embedded default loads and answers (the config has no local backend).
    assert status[("embedded", "smollm2:135m")] == "PASS"
    gateway = [f for f in report["findings"] if f["check"] == "gateway"]
    assert len(gateway) == 3 and all(f["status"] == "PASS" for f in gateway)
    # The default SQLite database, not created yet; no Redis configured: said, not failed.
    db = next(f for f in report["findings"] if f["check"] == "database")
    assert db["status"] == "PASS" and db["target"] == f"sqlite {tmp_path}/data/aistack/aistack.db"
    assert "not created yet" in db["detail"]
    assert status[("redis", "-")] == "SKIP"


def test_doctor_tells_a_wrong_dialect_from_a_dead_box(stack: Stack, tmp_path: Path) -> None:
    cfg = write_config(
        tmp_path / "aistack.yaml",
        {"backends": [
            # llama.cpp's server configured as Ollama; and as OpenAI without /v1.
            {"name": "as-ollama", "kind": "ollama", "url": stack.llama.url},
            {"name": "no-v1", "kind": "openai", "url": stack.llama.url},
            {"name": "ollama-api", "kind": "openai", "url": f"{stack.upstream.url}/api"},
        ],
         "aliases": {"nowhere": "ghost:1b"},
         "routing": {"models": {"nowhere": {"context_fallbacks": ["ghost:2b"]}}}},
    )  # fmt: skip
    out = aistack("doctor", "--json", "--prompts", "none", "--no-embedded", config=cfg)
    assert out.returncode == 1
    by = {(f["check"], f["target"]): f for f in json.loads(out.stdout)["findings"]}
    f = by[("url", "as-ollama")]
    assert (
        "OpenAI API at /v1" in f["detail"]
        and f["fix"] == f"kind: openai, url: {stack.llama.url}/v1"
    )
    f = by[("url", "no-v1")]
    assert "missing /v1" in f["detail"] and f["fix"] == f"url: {stack.llama.url}/v1"
    f = by[("url", "ollama-api")]
    assert f["fix"].startswith(f"url: {stack.upstream.url}/v1")
    f = by[("alias", "nowhere")]
    assert f["status"] == "FAIL" and "no backend has" in f["detail"]
    f = by[("fallback", "nowhere -> ghost:2b")]
    assert f["status"] == "FAIL"
    assert f["fix"].endswith("or fix routing.models.nowhere.context_fallbacks[0]")


def test_doctor_checks_the_gateway_url_form(stack: Stack, tmp_path: Path) -> None:
    cfg = write_config(tmp_path / "aistack.yaml", {"backends": []})
    out = aistack("doctor", "--json", "--gateway", f"{stack.url}/v1", "--no-embedded", config=cfg)
    assert out.returncode == 1
    (f,) = [f for f in json.loads(out.stdout)["findings"] if f["check"] == "gateway"]
    assert f["status"] == "FAIL" and f["fix"] == f"--gateway {stack.url}"


def test_doctor_config_error_exits_two(tmp_path: Path) -> None:
    bad = tmp_path / "aistack.yaml"
    bad.write_text("backends:\n  - name: x\n    kind: ollama\n")
    out = aistack("doctor", config=bad)
    assert out.returncode == 2 and "backends[0].url: required" in out.stderr


@pytest.mark.parametrize(
    ("kind", "url", "fix"),
    [
        ("ollama", "http://box:11434/v1", "url: http://box:11434"),
        ("ollama", "http://box:11434/v1/", "url: http://box:11434"),
        ("ollama", "http://box:11434/api", "url: http://box:11434"),
        ("ollama", "http://box:11434/api/tags", "url: http://box:11434"),
        ("ollama", "https://proxy.lan/ollama/v1", "url: https://proxy.lan/ollama"),
        ("openai", "http://box:11434/api", "url: http://box:11434/v1"),
        ("openai", "http://box:8000/v1/chat/completions", "url: http://box:8000/v1"),
        ("ollama", "http://box:11434", None),
        ("ollama", "https://proxy.lan/ollama", None),
        ("openai", "http://box:8000/v1", None),
        ("openai", "https://openrouter.ai/api/v1", None),
    ],
)
def test_url_forms(kind: str, url: str, fix: str | None) -> None:
    p = url_problem(kind, url)
    if fix is None:
        assert p is None
    else:
        assert p is not None and p.fix.startswith(fix)


def test_missing_model_hints() -> None:
    # A bare name means :latest; the box has another tag.
    detail, fix = missing_model_fix("ollama", "voice", "qwen3", ["qwen3:4b", "llama3.2:latest"])
    assert "means 'qwen3:latest'" in detail and fix.startswith("declare 'qwen3:4b'")
    # An OpenAI-style id for an Ollama model.
    detail, fix = missing_model_fix("ollama", "reason", "openai/gpt-oss-20b", ["gpt-oss:20b"])
    assert "OpenAI-style id" in detail
    assert fix.startswith("declare 'gpt-oss:20b'") and "alias 'openai/gpt-oss-20b" in fix
    # Plainly missing: pull it.
    _, fix = missing_model_fix("ollama", "reason", "qwen3:8b", ["gpt-oss:20b"])
    assert fix.startswith("aistack models pull qwen3:8b --instance reason")
    # On an OpenAI-compatible server: load it there.
    _, fix = missing_model_fix("openai", "vllm", "qwen3-8b", ["llama-3.1-8b"])
    assert "load 'qwen3-8b' on that server" in fix


def test_doctor_checks_the_database_and_redis(
    pg_url: str, redis_target: tuple[str, str], tmp_path: Path
) -> None:
    redis_url, _ = redis_target
    cfg = write_config(
        tmp_path / "aistack.yaml",
        {"backends": [], "database_url": pg_url, "redis_url": redis_url},
    )
    args = ("doctor", "--json", "--no-embedded")
    report = json.loads(aistack(*args, config=cfg).stdout)
    by = {f["check"]: f for f in report["findings"]}
    # A fresh PostgreSQL database: reachable, but its schema is not there yet.
    assert by["database"]["status"] == "FAIL" and "schema version 0" in by["database"]["detail"]
    assert by["database"]["fix"].startswith("aistack db upgrade")
    assert by["redis"]["status"] == "PASS" and "PONG" in by["redis"]["detail"]
    assert aistack("db", "upgrade", config=cfg).returncode == 0
    out = aistack(*args, config=cfg)
    assert out.returncode == 0, out.stdout
    by = {f["check"]: f for f in json.loads(out.stdout)["findings"]}
    assert by["database"]["status"] == "PASS" and "schema version" in by["database"]["detail"]
    # Nothing listening: both fail, each with its fix.
    dead = write_config(
        tmp_path / "dead" / "aistack.yaml",
        {"backends": [],
         "database_url": f"postgresql://127.0.0.1:{free_port()}/x",
         "redis_url": f"redis://127.0.0.1:{free_port()}/0"},
    )  # fmt: skip
    out = aistack(*args, config=dead)
    assert out.returncode == 1
    by = {f["check"]: f for f in json.loads(out.stdout)["findings"]}
    assert by["database"]["status"] == "FAIL" and "correct database_url" in by["database"]["fix"]
    assert by["redis"]["status"] == "FAIL" and "correct redis_url" in by["redis"]["fix"]


def test_doctor_reads_an_existing_sqlite_database(tmp_path: Path) -> None:
    cfg = write_config(
        tmp_path / "aistack.yaml", {"backends": [], "database_url": "state/aistack.db"}
    )
    # A relative path is relative to the config file; keys create makes the database.
    assert aistack("keys", "create", "--name", "x", "--json", config=cfg).returncode == 0
    out = aistack("doctor", "--json", "--no-embedded", config=cfg)
    (db,) = [f for f in json.loads(out.stdout)["findings"] if f["check"] == "database"]
    assert db["status"] == "PASS" and db["target"] == f"sqlite {tmp_path}/state/aistack.db"
    assert db["detail"].startswith("schema version ")
