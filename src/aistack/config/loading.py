"""Reading the file: YAML, `${ENV}` interpolation for secrets, the backends' entries by
their kinds' schemas, and a mistake pinned to its key.

Where it comes from, in order: `--config FILE`, `$AISTACK_CONFIG`, `./aistack.yaml`,
else the embedded default (the local model, nothing else). A mistake stops startup with
one line naming the file, the key and the problem; unknown keys are mistakes too (a
typo in a config must not silently do nothing).

Two things a file leaves out come from elsewhere, and `Loaded.notes` says so at start:
a file without a `backends:` key keeps the embedded default's local model (`backends:
[]` means none), and `auth.master_key` unset is read from `$AISTACK_MASTER_KEY`.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any, get_args, get_origin, get_type_hints

import msgspec
import yaml

from aistack.backends.base import BackendConfig
from aistack.backends.registry import KINDS
from aistack.config.checks import check
from aistack.config.schema import Config, Loaded
from aistack.core.errors import ConfigError

EMBEDDED_DEFAULT = """\
server: {host: 127.0.0.1, port: 8434}
backends:
  - name: local
    kind: local
"""
# What a file without a `backends:` key serves: the embedded default's.
_DEFAULT_BACKENDS: list[dict[str, Any]] = [{"name": "local", "kind": "local"}]

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


def _pinpoint(raw: Any, typ: Any, path: str) -> tuple[str, str] | None:
    """Where `raw` fails to convert to `typ`, deepest part first, naming the keys of
    mappings (msgspec writes `[...]` for them: `routing.models[...].strategy`)."""
    if isinstance(raw, dict) and isinstance(typ, type) and issubclass(typ, msgspec.Struct):
        hints = get_type_hints(typ)
        for f in msgspec.structs.fields(typ):
            if f.encode_name in raw:
                sub = f"{path}.{f.name}" if path else f.name
                found = _pinpoint(raw[f.encode_name], hints[f.name], sub)
                if found is not None:
                    return found
    elif isinstance(raw, dict) and get_origin(typ) is dict:
        for k, v in raw.items():
            found = _pinpoint(v, get_args(typ)[1], f"{path}.{k}")
            if found is not None:
                return found
    elif isinstance(raw, list) and get_origin(typ) is list:
        for i, v in enumerate(raw):
            found = _pinpoint(v, get_args(typ)[0], f"{path}[{i}]")
            if found is not None:
                return found
    try:
        msgspec.convert(raw, typ, strict=False)
    except msgspec.ValidationError as e:
        key, problem = _msgspec_problem(e)
        if key == "(top level)":
            return path or key, problem
        return (f"{path}.{key}" if path else key), problem
    return None


def parse(text: str, where: str, env: Mapping[str, str] | None = None) -> Config:
    return parse_noting(text, where, env)[0]


def parse_noting(
    text: str, where: str, env: Mapping[str, str] | None = None
) -> tuple[Config, list[str]]:
    """The config, and what it took from elsewhere (see the module's docstring)."""
    env = os.environ if env is None else env
    notes: list[str] = []
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
    raw = _interpolate(raw, "", env, where)
    if "backends" not in raw:
        raw["backends"] = [dict(b) for b in _DEFAULT_BACKENDS]
        notes.append(
            f"{where} has no backends: key, so the embedded default's local model is "
            "served (write backends: [] for none)"
        )
    entries = raw.pop("backends", None)
    try:
        cfg = msgspec.convert(raw, Config, strict=False)
    except msgspec.ValidationError as e:
        key, problem = _pinpoint(raw, Config, "") or _msgspec_problem(e)
        raise ConfigError(f"{where}: {key}: {problem}") from None
    cfg.backends = _backends(entries, where)
    if cfg.auth.master_key is None and env.get("AISTACK_MASTER_KEY"):
        cfg.auth = msgspec.structs.replace(cfg.auth, master_key=env["AISTACK_MASTER_KEY"])
        notes.append("auth.master_key is unset: the master key is $AISTACK_MASTER_KEY")
        where_key = "auth.master_key ($AISTACK_MASTER_KEY)"
    else:
        where_key = "auth.master_key"
    check(cfg, where, where_key)
    return cfg, notes


def _backends(entries: object, where: str) -> list[BackendConfig]:
    """Each `backends:` entry, validated by its kind's schema."""
    if entries is None:
        return []
    if not isinstance(entries, list):
        raise ConfigError(f"{where}: backends: expected a list of backends")
    out = []
    for i, raw in enumerate(entries):
        key = f"backends[{i}]"
        if not isinstance(raw, dict):
            raise ConfigError(f"{where}: {key}: expected a mapping (name, kind, ...)")
        kind = KINDS.get(raw.get("kind"))  # type: ignore[arg-type]
        if kind is None:
            kinds = ", ".join(repr(k) for k in sorted(KINDS))
            raise ConfigError(
                f"{where}: {key}.kind: expected one of {kinds}, got {raw.get('kind')!r}"
            )
        try:
            out.append(msgspec.convert(raw, kind.config, strict=False))
        except msgspec.ValidationError as e:
            sub, problem = _pinpoint(raw, kind.config, key) or _msgspec_problem(e)
            raise ConfigError(f"{where}: {sub}: {problem}") from None
    return out


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
        cfg, notes = parse_noting(EMBEDDED_DEFAULT, "embedded default", env)
        return Loaded(cfg, "embedded default", tuple(notes))
    try:
        text = path.read_text()
    except OSError as e:
        raise ConfigError(f"{path}: cannot read: {e.strerror or e}") from None
    cfg, notes = parse_noting(text, str(path), env)
    return Loaded(_anchor(cfg, path.parent), str(path), tuple(notes))


def _anchor(cfg: Config, base: Path) -> Config:
    """Relative file paths in the config (workflows, image storage) start at its folder."""

    def at(p: str) -> str:
        q = Path(p).expanduser()
        return str(q if q.is_absolute() else (base / q).resolve())

    for b in cfg.backends:
        for w in getattr(b, "workflows", {}).values():
            w.file = at(w.file)
    if cfg.images.storage:
        cfg.images.storage = at(cfg.images.storage)
    return cfg
