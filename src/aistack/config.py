"""The configuration file: YAML, `${ENV}` interpolation for secrets, strict keys.

Where it comes from, in order: `--config FILE`, `$AISTACK_CONFIG`, `./aistack.yaml`,
else the embedded default (the local model, nothing else). A mistake stops startup with
one line naming the file, the key and the problem; unknown keys are mistakes too (a
typo in a config must not silently do nothing).
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import msgspec
import yaml

from aistack.core.models import canonical


class ConfigError(Exception):
    """A configuration problem, already phrased as `file: key: problem`."""


class _Strict(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    pass


class ServerConfig(_Strict):
    host: str = "127.0.0.1"
    port: int = 8434
    # Requests above this size get a 413; images in base64 make chat bodies large.
    max_body_bytes: int = 64 * 1024 * 1024
    log_level: Literal["debug", "info", "warning", "error"] = "info"
    # Extra origins allowed for browser clients, beyond Ollama's local defaults.
    cors_origins: list[str] = msgspec.field(default_factory=list)
    # The URL apps reach the gateway at (http://aistack.lan:8434): what `aistack
    # snippet` puts in their config. Default: built from host and port.
    public_url: str | None = None


class TimeoutsConfig(_Strict):
    """Seconds. Defaults suit slow local models: a 20B model can take a minute to load."""

    connect: float = 10.0
    first_token: float | None = 600.0
    idle: float | None = 300.0
    total: float | None = None


class BackendConfig(_Strict):
    name: str
    kind: Literal["ollama", "openai", "local"]
    url: str | None = None
    api_key: str | None = None
    # Models this backend should have: listed even when it is down, and the desired
    # state for `aistack models sync`.
    models: list[str] = msgspec.field(default_factory=list)
    # Ask the backend what it has (OpenRouter lists hundreds; say false and declare).
    discover: bool = True
    headers: dict[str, str] = msgspec.field(default_factory=dict)
    timeouts: TimeoutsConfig = msgspec.field(default_factory=TimeoutsConfig)
    # openai: send top_k, min_p, repeat_penalty (OpenAI itself rejects them).
    sampling_extras: bool | None = None
    # local: the GGUF file and engine settings.
    model_path: str | None = None
    model_name: str | None = None
    n_ctx: int = 4096
    n_threads: int | None = None
    keep_alive: float | None = None


class Config(_Strict):
    server: ServerConfig = msgspec.field(default_factory=ServerConfig)
    backends: list[BackendConfig] = msgspec.field(default_factory=list)
    aliases: dict[str, str] = msgspec.field(default_factory=dict)
    # How long a backend's model list is trusted before it is asked again.
    models_ttl: float = 10.0


@dataclass(frozen=True, slots=True)
class Loaded:
    config: Config
    source: str  # the file it came from, or "embedded default"


EMBEDDED_DEFAULT = """\
server: {host: 127.0.0.1, port: 8434}
backends:
  - name: local
    kind: local
"""

_VAR = re.compile(r"\$\$|\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")


def _interpolate(node: Any, path: str, env: Mapping[str, str], where: str) -> Any:
    if isinstance(node, str):

        def sub(m: re.Match[str]) -> str:
            if m.group(0) == "$$":
                return "$"
            name, default = m.group(1), m.group(2)
            if name in env:
                return env[name]
            if default is not None:
                return default
            raise ConfigError(f"{where}: {path}: environment variable {name} is not set")

        return _VAR.sub(sub, node)
    if isinstance(node, list):
        return [_interpolate(v, f"{path}[{i}]", env, where) for i, v in enumerate(node)]
    if isinstance(node, dict):
        return {
            k: _interpolate(v, f"{path}.{k}" if path else str(k), env, where)
            for k, v in node.items()
        }
    return node


_AT = re.compile(r"^(.*?)(?: - at `\$(.*)`)?$", re.S)


def _msgspec_problem(e: msgspec.ValidationError) -> tuple[str, str]:
    m = _AT.match(str(e))
    assert m is not None
    problem, at = m.group(1), (m.group(2) or "")
    key = at.lstrip(".") or "(top level)"
    problem = problem.replace("`", "'")
    return key, problem[0].lower() + problem[1:] if problem else problem


def parse(text: str, where: str, env: Mapping[str, str] | None = None) -> Config:
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        loc = f"line {mark.line + 1}" if mark is not None else "(syntax)"
        raise ConfigError(f"{where}: {loc}: invalid YAML: {getattr(e, 'problem', e)}") from None
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise ConfigError(f"{where}: (top level): expected a mapping of settings")
    raw = _interpolate(raw, "", os.environ if env is None else env, where)
    try:
        cfg = msgspec.convert(raw, Config, strict=False)
    except msgspec.ValidationError as e:
        key, problem = _msgspec_problem(e)
        raise ConfigError(f"{where}: {key}: {problem}") from None
    _check(cfg, where)
    return cfg


def _check(cfg: Config, where: str) -> None:
    if not (0 < cfg.server.port < 65536):
        raise ConfigError(f"{where}: server.port: must be between 1 and 65535")
    pub = cfg.server.public_url
    if pub is not None:
        if not re.match(r"^https?://[^/\s]+", pub):
            raise ConfigError(f"{where}: server.public_url: {pub!r} is not an http(s) URL")
        if re.search(r"/(v1|api)/?$", pub):
            raise ConfigError(
                f"{where}: server.public_url: give the root URL, without /v1 or /api "
                "(each app gets the form it needs)"
            )
    seen: set[str] = set()
    for i, b in enumerate(cfg.backends):
        key = f"backends[{i}]"
        if not b.name or not re.match(r"^[A-Za-z0-9_.\-]+$", b.name):
            raise ConfigError(
                f"{where}: {key}.name: {b.name!r} must be letters, digits, '.', '-' or '_'"
            )
        if b.name in seen:
            raise ConfigError(f"{where}: {key}.name: duplicate backend name {b.name!r}")
        seen.add(b.name)
        if b.kind in ("ollama", "openai"):
            if not b.url:
                raise ConfigError(f"{where}: {key}.url: required for an {b.kind} backend")
            if not re.match(r"^https?://[^/\s]+", b.url):
                raise ConfigError(
                    f"{where}: {key}.url: {b.url!r} is not an http:// or https:// URL"
                )
        for j, m in enumerate(b.models):
            if not m or not isinstance(m, str):
                raise ConfigError(f"{where}: {key}.models[{j}]: must be a model name")
    for alias, target in cfg.aliases.items():
        if not target:
            raise ConfigError(f"{where}: aliases.{alias}: needs a target model")
        if canonical(alias) == canonical(target):
            raise ConfigError(f"{where}: aliases.{alias}: an alias cannot point at itself")


def find_config(explicit: str | None, env: Mapping[str, str] | None = None) -> Path | None:
    env = os.environ if env is None else env
    if explicit:
        return Path(explicit)
    if env.get("AISTACK_CONFIG"):
        return Path(env["AISTACK_CONFIG"])
    here = Path("aistack.yaml")
    return here if here.is_file() else None


def load(explicit: str | None = None, env: Mapping[str, str] | None = None) -> Loaded:
    path = find_config(explicit, env)
    if path is None:
        return Loaded(parse(EMBEDDED_DEFAULT, "embedded default", env), "embedded default")
    try:
        text = path.read_text()
    except OSError as e:
        raise ConfigError(f"{path}: cannot read: {e.strerror or e}") from None
    return Loaded(parse(text, str(path), env), str(path))
