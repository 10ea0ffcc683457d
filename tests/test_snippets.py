"""`aistack snippet APP`: each snippet parsed back (.env with python-dotenv, the Kubernetes
form and app config files with YAML) and pointed at the running gateway, the way that
app uses it: the official `ollama` client for apps that speak the native API, the
`openai` SDK for the others; Open WebUI and Home Assistant match the model exactly
against the listed names, as they do.
"""

from __future__ import annotations

import io
import json
import time
import tomllib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anthropic
import httpx
import ollama
import openai
import pytest
import yaml
from dotenv import dotenv_values

from aistack.config import ConfigError, parse
from aistack.doctor.snippets import APPS
from tests.cli import aistack, write_config
from tests.conftest import UPSTREAM_MODEL, Stack
from tests.procs import running, start_gateway


@dataclass
class Target:
    dialect: str  # "ollama" | "openai" | "anthropic" | "responses"
    url: str
    model: str
    key: str | None = None
    headers: dict[str, str] | None = None
    exact: bool = False  # the app compares the model with the listed names


def _bearer(key: str | None) -> dict[str, str] | None:
    return {"Authorization": f"Bearer {key}"} if key else None


def _open_webui(env: dict[str, str], conf: Any) -> Target:
    if env["ENABLE_OLLAMA_API"] == "true":
        return Target("ollama", env["OLLAMA_BASE_URL"], env["DEFAULT_MODELS"], exact=True)
    return Target(
        "openai", env["OPENAI_API_BASE_URL"], env["DEFAULT_MODELS"], env["OPENAI_API_KEY"],
        exact=True,
    )  # fmt: skip


def _paperless_ai(env: dict[str, str], conf: Any) -> Target:
    if env["AI_PROVIDER"] == "ollama":
        return Target("ollama", env["OLLAMA_API_URL"], env["OLLAMA_MODEL"])
    return Target("openai", env["CUSTOM_BASE_URL"], env["CUSTOM_MODEL"], env["CUSTOM_API_KEY"])


def _paperless_gpt(env: dict[str, str], conf: Any) -> Target:
    headers = None
    if "OLLAMA_HEADERS" in env:  # "Name=Value,Name2=Value2", as Paperless-GPT parses it
        headers = dict(h.split("=", 1) for h in env["OLLAMA_HEADERS"].split(","))
    return Target("ollama", env["OLLAMA_HOST"], env["LLM_MODEL"], headers=headers)


def _frigate(env: dict[str, str], conf: Any) -> Target:
    g = conf["genai"]
    assert g["provider"] == "ollama"
    key = g.get("api_key")
    if key:  # Frigate substitutes {FRIGATE_*} environment variables
        key = key.format(**env)
    return Target("ollama", g["base_url"], g["model"], headers=_bearer(key))


def _home_assistant(env: dict[str, str], conf: Any) -> Target:
    key = conf.get("api_key")
    return Target("ollama", conf["url"], conf["model"], headers=_bearer(key), exact=True)


def _ollama(env: dict[str, str], conf: Any) -> Target:
    # ollama-python sends OLLAMA_API_KEY as a Bearer token.
    return Target(
        "ollama",
        env["OLLAMA_HOST"],
        env["OLLAMA_MODEL"],
        headers=_bearer(env.get("OLLAMA_API_KEY")),
    )


def _openai(env: dict[str, str], conf: Any) -> Target:
    return Target("openai", env["OPENAI_BASE_URL"], env["OPENAI_MODEL"], env["OPENAI_API_KEY"])


# Claude Code's model variables: every tier it may pick.
CLAUDE_MODELS = (
    "ANTHROPIC_MODEL", "ANTHROPIC_DEFAULT_OPUS_MODEL", "ANTHROPIC_DEFAULT_SONNET_MODEL",
    "ANTHROPIC_DEFAULT_HAIKU_MODEL", "ANTHROPIC_SMALL_FAST_MODEL", "CLAUDE_CODE_SUBAGENT_MODEL",
)  # fmt: skip


def _claude_code(env: dict[str, str], conf: Any) -> Target:
    assert conf == {"env": env}  # settings.json carries the same environment
    (model,) = {env[v] for v in CLAUDE_MODELS}
    return Target("anthropic", env["ANTHROPIC_BASE_URL"], model, env["ANTHROPIC_AUTH_TOKEN"])


def _codex(env: dict[str, str], conf: Any) -> Target:
    p = conf["model_providers"][conf["model_provider"]]
    assert p["wire_api"] == "responses"
    return Target("responses", p["base_url"], conf["model"], env[p["env_key"]])


READS: dict[str, Callable[[dict[str, str], Any], Target]] = {
    "open-webui": _open_webui,
    "paperless-ai": _paperless_ai,
    "paperless-gpt": _paperless_gpt,
    "frigate": _frigate,
    "home-assistant": _home_assistant,
    "ollama": _ollama,
    "openai": _openai,
    "claude-code": _claude_code,
    "codex": _codex,
}

# How each app's own config file is read back.
CONFIGS: dict[str, Callable[[str], Any]] = {
    "frigate": yaml.safe_load,
    "home-assistant": yaml.safe_load,
    "claude-code": json.loads,
    "codex": tomllib.loads,
}


def test_every_app_has_a_reader_here() -> None:
    assert set(READS) == set(APPS)


def _snippet(app: str, *args: str, fmt: str, env: dict[str, str] | None = None) -> str:
    out = aistack("snippet", app, *args, "--format", fmt, env=env)
    assert out.returncode == 0, out.stderr
    return out.stdout


def _resolve(t: Target) -> None:
    if t.dialect == "ollama":
        assert not t.url.rstrip("/").endswith(("/v1", "/api"))
        c = ollama.Client(host=t.url, headers=t.headers)
        if t.exact:
            assert t.model in [m.model for m in c.list().models]
        assert c.show(t.model).modelinfo is not None
        r = c.chat(t.model, messages=[{"role": "user", "content": "Hi"}],
                   options={"num_predict": 8})  # fmt: skip
        assert r.done and r.message.content
    elif t.dialect == "anthropic":
        # As Claude Code does: the root URL (it appends /v1/messages), a Bearer token,
        # always streaming.
        assert not t.url.rstrip("/").endswith(("/v1", "/api")) and t.key
        ac = anthropic.Anthropic(base_url=t.url, auth_token=t.key)
        with ac.messages.stream(
            model=t.model, max_tokens=8, messages=[{"role": "user", "content": "Hi"}]
        ) as st:
            m = st.get_final_message()
        assert m.content and m.content[0].type == "text" and m.content[0].text
    elif t.dialect == "responses":
        # As Codex does: {base_url}/responses, streamed, until response.completed.
        assert t.url.rstrip("/").endswith("/v1") and t.key
        oc = openai.OpenAI(base_url=t.url, api_key=t.key)
        events = list(
            oc.responses.create(model=t.model, input="Hi", max_output_tokens=8, stream=True)
        )
        done = events[-1]
        assert done.type == "response.completed" and done.response.usage is not None
        assert done.response.usage.total_tokens > 0 and done.response.output_text
    else:
        assert t.url.rstrip("/").endswith("/v1") and t.key
        oc = openai.OpenAI(base_url=t.url, api_key=t.key)
        ids = [m.id for m in oc.models.list().data]
        if t.exact:
            assert t.model in ids
        assert oc.models.retrieve(t.model).id
        r = oc.chat.completions.create(
            model=t.model, messages=[{"role": "user", "content": "Hi"}], max_tokens=8
        )
        assert r.choices[0].message.content


CASES = [(app, None, None) for app in APPS] + [
    ("open-webui", "sk-app-123", None),  # a key: the OpenAI connection carries it
    ("open-webui", None, "openai"),
    ("paperless-ai", "sk-app-123", None),  # a key: the custom (OpenAI) provider
    ("paperless-gpt", "sk-app-123", None),
    ("frigate", "sk-app-123", None),
    ("home-assistant", "sk-app-123", None),
    ("ollama", "sk-app-123", None),
    ("openai", "sk-app-123", None),
    ("claude-code", "sk-app-123", None),
    ("codex", "sk-app-123", None),
]


@pytest.mark.parametrize(("app", "key", "via"), CASES)
def test_snippet_parses_back_and_resolves_against_the_gateway(
    gw_url: str, app: str, key: str | None, via: str | None, tmp_path: Path
) -> None:
    args = ["--url", gw_url, "--model", "tiny"]
    if key:
        (tmp_path / "key").write_text(key + "\n")
        args += ["--key-file", str(tmp_path / "key")]
    if via:
        args += ["--via", via]
    env_text = _snippet(app, *args, fmt="env")
    k8s_text = _snippet(app, *args, fmt="k8s")
    env = {k: v or "" for k, v in dotenv_values(stream=io.StringIO(env_text)).items()}
    k8s = yaml.safe_load(k8s_text)
    assert {e["name"]: e["value"] for e in k8s["env"]} == env  # the same settings twice
    assert all(isinstance(e["value"], str) for e in k8s["env"])  # Kubernetes wants strings
    conf = None
    if app in CONFIGS:
        conf = CONFIGS[app](_snippet(app, *args, fmt="config"))
    if key:
        assert key in env_text + yaml.safe_dump(conf)
    t = READS[app](env, conf)
    _resolve(t)
    if app == "paperless-ai" and t.dialect == "ollama":
        # Its chat uses the OpenAI SDK at OLLAMA_API_URL + /v1 with key "ollama".
        _resolve(Target("openai", t.url + "/v1", t.model, "ollama"))


def test_the_all_form_names_app_url_and_model(gw_url: str) -> None:
    args = ["--url", gw_url, "--model", "tiny", "--key-env", "PAPERLESS_KEY"]
    text = _snippet("paperless-gpt", *args, fmt="all", env={"PAPERLESS_KEY": "k1"})
    assert text.startswith(f"# Paperless-GPT -> aistack at {gw_url} (native Ollama API)")
    assert 'OLLAMA_HEADERS="Authorization=Bearer k1"' in text
    assert "# --- Kubernetes: the container's env ---" in text


def test_a_key_never_comes_from_the_command_line(tmp_path: Path) -> None:
    """Secrets stay off command lines (every user's `ps` shows them): --key is refused,
    --key-file and --key-env are how an existing key goes in, and $AISTACK_KEY (the
    admin key of other commands) is read only when named."""
    cfg = write_config(tmp_path / "aistack.yaml", {"backends": []})
    out = aistack("snippet", "openai", "--key", "sk-on-the-command-line", config=cfg)
    assert out.returncode == 2 and out.stdout == ""
    assert "--key: not on the command line" in out.stderr
    assert "--key-file FILE" in out.stderr and "--key-env NAME" in out.stderr
    assert "sk-on-the-command-line" not in out.stderr

    admin = {"AISTACK_KEY": "sk-admin-not-for-apps"}
    out = aistack("snippet", "openai", "--format", "env", config=cfg, env=admin)
    assert out.returncode == 0 and "sk-admin-not-for-apps" not in out.stdout
    out = aistack("snippet", "openai", "--format", "env", "--key-env", "AISTACK_KEY",
                  config=cfg, env=admin)  # fmt: skip
    assert out.returncode == 0, out.stderr
    assert "OPENAI_API_KEY=sk-admin-not-for-apps\n" in out.stdout

    (tmp_path / "key").write_text("sk-from-a-file\n")
    out = aistack("snippet", "openai", "--format", "env", "--key-file", str(tmp_path / "key"),
                  config=cfg)  # fmt: skip
    assert out.returncode == 0 and "OPENAI_API_KEY=sk-from-a-file\n" in out.stdout

    for args, why in [
        (["--key-env", "AISTACK_NO_SUCH_VARIABLE"], "that variable is not set or empty"),
        (["--key-file", str(tmp_path / "missing")], "--key-file"),
        (["--key-file", str(tmp_path / "key"), "--create-key"], "not two of them"),
    ]:
        out = aistack("snippet", "openai", *args, config=cfg)
        assert out.returncode == 2 and why in out.stderr, (args, out.stderr)


def test_defaults_come_from_the_config(tmp_path: Path) -> None:
    cfg = write_config(
        tmp_path / "aistack.yaml",
        {"server": {"public_url": "http://aistack.lan:8434"},
         "backends": [{"name": "r", "kind": "ollama", "url": "http://box:11434",
                       "models": ["gpt-oss:20b"]}]},
    )  # fmt: skip
    out = aistack("snippet", "openai", "--format", "env", config=cfg)
    env = dotenv_values(stream=io.StringIO(out.stdout))
    assert env["OPENAI_BASE_URL"] == "http://aistack.lan:8434/v1"
    assert env["OPENAI_MODEL"] == "gpt-oss:20b"


def test_public_url_must_be_the_root() -> None:
    with pytest.raises(ConfigError, match="public_url: give the root URL"):
        parse("server: {public_url: 'http://gw:8434/v1'}", "x.yaml")
    with pytest.raises(ConfigError, match="public_url: 'gw:8434' is not an http"):
        parse("server: {public_url: 'gw:8434'}", "x.yaml")


def test_create_key_mints_a_key_the_gateway_takes(stack: Stack, tmp_path: Path) -> None:
    cfg = write_config(
        tmp_path / "aistack.yaml",
        {"backends": [{"name": "up", "kind": "ollama", "url": stack.upstream.url}],
         "database_url": str(tmp_path / "aistack.db"),
         "auth": {"refresh": 0.5}},
    )  # fmt: skip
    with running(start_gateway(tmp_path, None, name="keyed", args=["--config", str(cfg)])) as gw:
        out = aistack(
            "snippet", "openai", "--url", gw.url, "--model", UPSTREAM_MODEL, "--format", "env",
            "--create-key", "--key-models", "smollm2-*", config=cfg,
        )  # fmt: skip
        assert out.returncode == 0, out.stderr
        assert "created key key_" in out.stderr and "for openai (models: smollm2-*)" in out.stderr
        env = dotenv_values(stream=io.StringIO(out.stdout))
        key = env["OPENAI_API_KEY"]
        assert key and key.startswith("sk-") and key in out.stdout
        # The first key ends open mode: no key is a 401 now, the snippet's key works.
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            if httpx.get(f"{gw.url}/v1/models").status_code == 401:
                break
            time.sleep(0.2)
        assert httpx.get(f"{gw.url}/v1/models").status_code == 401
        _resolve(Target("openai", env["OPENAI_BASE_URL"], env["OPENAI_MODEL"], key))
        listed = aistack("keys", "list", "--json", config=cfg)
        (rec,) = json.loads(listed.stdout)["keys"]
        assert rec["name"] == "openai" and rec["models"] == ["smollm2-*"]


def test_create_key_is_not_minted_for_a_bad_request(tmp_path: Path) -> None:
    cfg = write_config(
        tmp_path / "aistack.yaml",
        {"backends": [], "database_url": str(tmp_path / "aistack.db")},
    )
    out = aistack("snippet", "home-assistant", "--via", "openai", "--create-key", config=cfg)
    assert out.returncode == 2 and "speaks only the native Ollama API" in out.stderr
    listed = aistack("keys", "list", "--json", config=cfg)
    assert json.loads(listed.stdout)["keys"] == []


def test_one_dialect_apps_refuse_the_other(tmp_path: Path) -> None:
    cfg = write_config(tmp_path / "aistack.yaml", {"backends": []})
    out = aistack("snippet", "home-assistant", "--via", "openai", config=cfg)
    assert out.returncode == 2 and "speaks only the native Ollama API" in out.stderr
    out = aistack("snippet", "openai", "--format", "config", config=cfg)
    assert out.returncode == 2 and "no config form" in out.stderr
    out = aistack("snippet", "codex", "--via", "openai", config=cfg)
    assert out.returncode == 2 and "speaks only the OpenAI Responses API" in out.stderr
