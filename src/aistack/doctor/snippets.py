"""Per-app config snippets: the environment (or config file) block that points an app at
aistack, with the base-URL form that app needs and the model name as it compares it.

Which variables each app reads comes from the apps' own sources
(shared/reference/ollama-api.md section 5, components.md section 3):

- Open WebUI: `OLLAMA_BASE_URL` (native, root URL; its model management then works
  through aistack) or `OPENAI_API_BASE_URL` + `OPENAI_API_KEY` (`/v1`; the only way to
  give it a key from the environment). `DEFAULT_MODELS` must match a listed id exactly.
  Its image engine "openai" reads `ENABLE_IMAGE_GENERATION`, `IMAGE_GENERATION_ENGINE`,
  `IMAGES_OPENAI_API_BASE_URL` (`/v1`), `IMAGES_OPENAI_API_KEY` and
  `IMAGE_GENERATION_MODEL` (docs/images.md).
- Paperless-AI: `AI_PROVIDER=ollama` + `OLLAMA_API_URL` (root; it adds `/v1` itself for
  chat, and sends no key) or `AI_PROVIDER=custom` + `CUSTOM_BASE_URL` (`/v1`) +
  `CUSTOM_API_KEY`.
- Paperless-GPT: `LLM_PROVIDER=ollama`, `OLLAMA_HOST` (root), `LLM_MODEL`, and
  `OLLAMA_HEADERS="Authorization=Bearer KEY"` for a key.
- Frigate: `genai:` in its config.yml (`provider: ollama`, `base_url` root, `model`);
  a key goes in through `{FRIGATE_GENAI_API_KEY}`, its env-variable substitution.
- Home Assistant: set in its UI (URL, API key, model); it compares the model with
  `/api/tags` exactly, so the name is the listed `name:tag`.
- Generic Ollama client (ollama-python/-js, langchain): `OLLAMA_HOST`, `OLLAMA_API_KEY`.
- Generic OpenAI client (the SDKs): `OPENAI_BASE_URL` (`/v1`), `OPENAI_API_KEY`.
- Claude Code (Anthropic Messages; shared/reference/agent-clients.md):
  `ANTHROPIC_BASE_URL` (root: it appends `/v1/messages`), `ANTHROPIC_AUTH_TOKEN` (sent as
  a Bearer token; without one it asks to log in to Anthropic), and its model variables.
- Codex CLI (OpenAI Responses): a `model_providers` entry in `$CODEX_HOME/config.toml`
  with `base_url` (`/v1`), `wire_api = "responses"` and `env_key`, the variable holding
  the key.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any, Literal

import yaml

from aistack.core.models import canonical

# The API an app speaks to aistack. Only the first two are a choice (`--via`).
Dialect = Literal["ollama", "openai", "anthropic", "responses"]
Via = Literal["ollama", "openai"]

API_NAMES: dict[str, str] = {
    "ollama": "native Ollama API",
    "openai": "OpenAI API",
    "anthropic": "Anthropic Messages API",
    "responses": "OpenAI Responses API",
}

APPS: dict[str, str] = {
    "open-webui": "Open WebUI",
    "paperless-ai": "Paperless-AI",
    "paperless-gpt": "Paperless-GPT",
    "frigate": "Frigate",
    "home-assistant": "Home Assistant",
    "ollama": "an Ollama client (ollama-python, ollama-js, langchain, scripts)",
    "openai": "an OpenAI client (the OpenAI SDKs, agents, scripts)",
    "claude-code": "Claude Code",
    "codex": "Codex CLI",
}

# Apps that can speak either dialect to aistack; the others speak one.
_BOTH = ("open-webui", "paperless-ai")

# What an OpenAI SDK needs when the gateway asks for no key: any non-empty string.
NO_KEY = "aistack"

# The variable Codex reads the key from (its provider entry's env_key).
CODEX_KEY_VAR = "AISTACK_API_KEY"


@dataclass
class Snippet:
    app: str
    title: str
    url: str  # the base URL the app is given (root or /v1)
    dialect: Dialect
    model: str
    env: dict[str, str] = field(default_factory=dict)
    # An app's own config file block (Frigate) or the fields of its setup form (HA).
    config: dict[str, Any] | None = None
    config_where: str = ""
    config_format: Literal["yaml", "toml", "json"] = "yaml"
    notes: list[str] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return {
            "app": self.app,
            "title": self.title,
            "url": self.url,
            "dialect": self.dialect,
            "api": API_NAMES[self.dialect],
            "model": self.model,
            "env": self.env,
            "config": self.config,
            "config_where": self.config_where,
            "config_format": self.config_format,
            "notes": self.notes,
        }


class SnippetError(ValueError):
    pass


def build(
    app: str,
    *,
    base: str,
    model: str,
    key: str | None = None,
    via: Via | None = None,
    images: str | None = None,
) -> Snippet:
    """The snippet for `app`, pointing at the gateway's root URL `base`. `images`: the
    gateway makes images (with this model; "" when it is not known yet)."""
    if app not in APPS:
        raise SnippetError(f"unknown app '{app}'; one of: {', '.join(APPS)}")
    if via is not None and app not in _BOTH and via != _dialect_of(app):
        raise SnippetError(f"{APPS[app]} speaks only the {API_NAMES[_dialect_of(app)]} to aistack")
    root = base.rstrip("/")
    v1 = root + "/v1"
    listed = canonical(model)  # the form /api/tags and /v1/models list
    title = APPS[app]
    if app == "open-webui":
        d: Dialect = via or ("openai" if key else "ollama")
        s = Snippet(app, title, root if d == "ollama" else v1, d, listed)
        if d == "ollama":
            s.env = {
                "ENABLE_OLLAMA_API": "true",
                "OLLAMA_BASE_URL": root,
                "ENABLE_OPENAI_API": "false",
            }
            if key:
                s.notes.append(
                    "Open WebUI takes an Ollama connection's key only in its UI: Admin "
                    "Settings > Connections > Ollama > the connection > Key"
                )
        else:
            s.env = {
                "ENABLE_OLLAMA_API": "false",
                "ENABLE_OPENAI_API": "true",
                "OPENAI_API_BASE_URL": v1,
                "OPENAI_API_KEY": key or NO_KEY,
            }
            s.notes.append(
                "model management (pull/delete) needs the Ollama connection; this one "
                "carries the key"
            )
        s.env["DEFAULT_MODELS"] = listed
        # Usage per end user: aistack reads X-OpenWebUI-User-* from these.
        s.env["ENABLE_FORWARD_USER_INFO_HEADERS"] = "true"
        if images is not None:
            # Its image engine "openai" calls /v1/images/generations (docs/images.md).
            s.env["ENABLE_IMAGE_GENERATION"] = "true"
            s.env["IMAGE_GENERATION_ENGINE"] = "openai"
            s.env["IMAGES_OPENAI_API_BASE_URL"] = v1
            s.env["IMAGES_OPENAI_API_KEY"] = key or NO_KEY
            if images:
                s.env["IMAGE_GENERATION_MODEL"] = canonical(images)
            else:
                s.notes.append(
                    "set IMAGE_GENERATION_MODEL to one of the image models "
                    "(GET /v1/images/models lists them)"
                )
        s.notes.append(
            "Open WebUI stores connection settings in its database on first start; "
            "later changes: Admin Settings > Connections (or ENABLE_PERSISTENT_CONFIG=false)"
        )
        return s
    if app == "paperless-ai":
        d = via or ("openai" if key else "ollama")
        if d == "ollama":
            s = Snippet(app, title, root, d, model)
            s.env = {"AI_PROVIDER": "ollama", "OLLAMA_API_URL": root, "OLLAMA_MODEL": model}
            s.notes.append(
                "Paperless-AI sends no key on this path; its chat uses OLLAMA_API_URL/v1, "
                "which aistack serves on the same port"
            )
        else:
            s = Snippet(app, title, v1, d, model)
            s.env = {
                "AI_PROVIDER": "custom",
                "CUSTOM_BASE_URL": v1,
                "CUSTOM_API_KEY": key or NO_KEY,
                "CUSTOM_MODEL": model,
            }
        s.notes.append(
            "its setup check needs a non-empty answer: a thinking model may spend "
            "RESPONSE_TOKENS on reasoning (aistack doctor warns about that)"
        )
        return s
    if app == "paperless-gpt":
        s = Snippet(app, title, root, "ollama", model)
        s.env = {"LLM_PROVIDER": "ollama", "LLM_MODEL": model, "OLLAMA_HOST": root}
        if key:
            s.env["OLLAMA_HEADERS"] = f"Authorization=Bearer {key}"
        s.notes.append(
            "for OCR with a vision model add VISION_LLM_PROVIDER=ollama and "
            "VISION_LLM_MODEL=<a vision model>"
        )
        return s
    if app == "frigate":
        s = Snippet(app, title, root, "ollama", model)
        genai: dict[str, Any] = {"provider": "ollama", "base_url": root, "model": model}
        if key:
            genai["api_key"] = "{FRIGATE_GENAI_API_KEY}"
            s.env = {"FRIGATE_GENAI_API_KEY": key}
        s.config = {"genai": genai}
        s.config_where = "Frigate's config.yml"
        s.notes.append(
            "Frigate checks the model with /api/show at startup and sends images: "
            "use a vision model"
        )
        return s
    if app == "home-assistant":
        s = Snippet(app, title, root, "ollama", listed)
        form: dict[str, Any] = {"url": root}
        if key:
            form["api_key"] = key
        form["model"] = listed
        s.config = form
        s.config_where = (
            "Home Assistant: Settings > Devices & services > Add integration > Ollama "
            "(url, API key), then its conversation agent (model)"
        )
        s.notes.append(
            f"Home Assistant compares the model with /api/tags exactly: '{listed}', tag "
            "included, or it tries to pull it"
        )
        return s
    if app == "ollama":
        s = Snippet(app, title, root, "ollama", model)
        s.env = {"OLLAMA_HOST": root, "OLLAMA_MODEL": model}
        if key:
            # ollama-python sends it as a Bearer token to whatever host it talks to.
            s.env["OLLAMA_API_KEY"] = key
        s.notes.append("ollama-js sends OLLAMA_API_KEY only to ollama.com: pass headers there")
        return s
    if app == "claude-code":
        return _claude_code(root, model, key)
    if app == "codex":
        return _codex(v1, model, key)
    s = Snippet(app, title, v1, "openai", model)
    s.env = {"OPENAI_BASE_URL": v1, "OPENAI_API_KEY": key or NO_KEY, "OPENAI_MODEL": model}
    return s


def _claude_code(root: str, model: str, key: str | None) -> Snippet:
    s = Snippet("claude-code", APPS["claude-code"], root, "anthropic", model)
    # Every model it may pick: the main one, the opus/sonnet/haiku tiers (titles and
    # summaries go to haiku), the older small-fast name, and subagents.
    s.env = {
        "ANTHROPIC_BASE_URL": root,
        "ANTHROPIC_AUTH_TOKEN": key or NO_KEY,
        "ANTHROPIC_MODEL": model,
        "ANTHROPIC_DEFAULT_OPUS_MODEL": model,
        "ANTHROPIC_DEFAULT_SONNET_MODEL": model,
        "ANTHROPIC_DEFAULT_HAIKU_MODEL": model,
        "ANTHROPIC_SMALL_FAST_MODEL": model,
        "CLAUDE_CODE_SUBAGENT_MODEL": model,
    }
    # Or in its settings file, which it reads at every start.
    s.config = {"env": dict(s.env)}
    s.config_where = "~/.claude/settings.json (or a project's .claude/settings.json)"
    s.config_format = "json"
    s.notes.append(
        "give ANTHROPIC_DEFAULT_HAIKU_MODEL a small fast model for titles and summaries, "
        "if you have one"
    )
    s.notes.append(
        "CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC=1 keeps Claude Code from calling "
        "Anthropic for telemetry and updates"
    )
    return s


def _codex(v1: str, model: str, key: str | None) -> Snippet:
    s = Snippet("codex", APPS["codex"], v1, "responses", model)
    s.config = {
        "model": model,
        "model_provider": "aistack",
        "model_providers": {
            "aistack": {
                "name": "aistack",
                "base_url": v1,
                "wire_api": "responses",
                "env_key": CODEX_KEY_VAR,
            }
        },
    }
    s.config_where = "$CODEX_HOME/config.toml (~/.codex/config.toml)"
    s.config_format = "toml"
    s.env = {CODEX_KEY_VAR: key or NO_KEY}
    s.notes.append(f"{CODEX_KEY_VAR} must be in the environment Codex runs in")
    s.notes.append(
        "avoid model names in Codex's own catalog (gpt-5-codex, ...): Codex changes its "
        "requests for those; an alias gives a model another name"
    )
    return s


# The one API of apps that speak one other than Ollama's.
_SPEAKS: dict[str, Dialect] = {"openai": "openai", "claude-code": "anthropic", "codex": "responses"}


def _dialect_of(app: str) -> Dialect:
    return _SPEAKS.get(app, "ollama")


def _env_value(v: str) -> str:
    if v and all(c.isalnum() or c in "-_.:/@,+=" for c in v):
        return v
    return '"' + v.replace("\\", "\\\\").replace('"', '\\"') + '"'


def render_env(s: Snippet) -> str:
    """`.env` form: docker compose env_file, systemd EnvironmentFile, dotenv."""
    if not s.env:
        return f"# {s.title} needs no environment for this; see --format config\n"
    return "".join(f"{k}={_env_value(v)}\n" for k, v in s.env.items())


def render_k8s(s: Snippet) -> str:
    """A container's `env:` list, for a Deployment or a Helm values file."""
    items = [{"name": k, "value": v} for k, v in s.env.items()]
    text = yaml.safe_dump({"env": items}, sort_keys=False, default_flow_style=False)
    return text if items else f"# {s.title} needs no environment for this\n{text}"


def render_config(s: Snippet) -> str:
    if s.config is None:
        return ""
    if s.config_format == "toml":
        return render_toml(s.config)
    if s.config_format == "json":
        return json.dumps(s.config, indent=2) + "\n"
    return yaml.safe_dump(s.config, sort_keys=False, default_flow_style=False)


def render_toml(d: dict[str, Any], prefix: str = "") -> str:
    """Keys with string, number or boolean values, and tables of them (all a config
    snippet needs); the scalars first, then each table under its dotted name."""
    lines = [f"{_toml_key(k)} = {_toml_value(v)}" for k, v in d.items() if not isinstance(v, dict)]
    out = "\n".join(lines) + ("\n" if lines else "")
    for k, v in d.items():
        if isinstance(v, dict):
            name = f"{prefix}.{_toml_key(k)}" if prefix else _toml_key(k)
            scalars = any(not isinstance(x, dict) for x in v.values())
            head = f"\n[{name}]\n" if scalars else ""
            out += head + render_toml(v, name)
    return out


def _toml_key(k: str) -> str:
    return k if k and all(c.isalnum() or c in "-_" for c in k) else _toml_value(k)


def _toml_value(v: object) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int | float):
        return repr(v)
    text = str(v).replace("\\", "\\\\").replace('"', '\\"')
    return '"' + "".join(c if c >= " " else f"\\u{ord(c):04x}" for c in text) + '"'


def render(s: Snippet, fmt: str = "all") -> str:
    """One form (`env`, `k8s`, `config`) as is, or all of them with comments."""
    if fmt == "env":
        return render_env(s)
    if fmt == "k8s":
        return render_k8s(s)
    if fmt == "config":
        return render_config(s)
    out = [f"# {s.title} -> aistack at {s.url} ({API_NAMES[s.dialect]}), model {s.model}"]
    out += [f"# note: {n}" for n in s.notes]
    if s.config is not None:
        out += ["", f"# --- {s.config_where} ---", render_config(s).rstrip("\n")]
    if s.env:
        out += ["", "# --- .env (docker compose env_file, systemd EnvironmentFile) ---"]
        out.append(render_env(s).rstrip("\n"))
        out += ["", "# --- Kubernetes: the container's env ---"]
        out.append(render_k8s(s).rstrip("\n"))
    return "\n".join(out) + "\n"
