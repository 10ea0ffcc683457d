"""Configuration: where it comes from, secrets from the environment, errors that say where."""

from __future__ import annotations

from pathlib import Path

import pytest

from aistack.config import EMBEDDED_DEFAULT, ConfigError, find_config, load, parse

EXAMPLE = Path(__file__).resolve().parent.parent / "aistack.example.yaml"


def test_the_embedded_default_is_the_local_model() -> None:
    cfg = parse(EMBEDDED_DEFAULT, "embedded default")
    assert [(b.name, b.kind) for b in cfg.backends] == [("local", "local")]
    assert cfg.server.host == "127.0.0.1"


def test_the_example_config_is_valid_and_shows_the_house() -> None:
    env = {"OPENROUTER_API_KEY": "sk-or-test", "AISTACK_MASTER_KEY": "m" * 32}
    cfg = parse(EXAMPLE.read_text(), str(EXAMPLE), env=env)
    by_name = {b.name: b for b in cfg.backends}
    assert by_name["voice"].url == "http://mac-mini.lan:11434"
    assert by_name["reason"].models == ["gpt-oss:20b"]
    assert by_name["vision"].models == ["qwen3-vl:8b-instruct"]
    assert by_name["openrouter"].api_key == "sk-or-test"
    assert cfg.aliases["reason"] == "gpt-oss:20b"
    assert cfg.auth.master_key == "m" * 32  # it binds 0.0.0.0, so it must have one


@pytest.mark.parametrize(
    ("text", "env", "expected"),
    [
        (
            "backends: [{name: a, kind: openai, url: 'http://x/v1', api_key: '${K}'}]",
            {"K": "s"},
            "s",
        ),
        ("backends: [{name: a, kind: openai, url: 'http://x/v1', api_key: '${K:-d}'}]", {}, "d"),
        ("backends: [{name: a, kind: openai, url: 'http://x/v1', api_key: 'a$$b'}]", {}, "a$b"),
    ],
)
def test_secrets_come_from_the_environment(text: str, env: dict[str, str], expected: str) -> None:
    assert parse(text, "f.yaml", env).backends[0].api_key == expected


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("server: {prot: 1}", "f.yaml: server: object contains unknown field 'prot'"),
        ("server: {port: http}", "f.yaml: server.port: expected 'int', got 'str'"),
        ("server: {port: 70000}", "f.yaml: server.port: must be between 1 and 65535"),
        ("backends: [{name: a, kind: olama, url: 'http://x'}]", "f.yaml: backends[0].kind: "),
        ("backends: [{name: a, kind: ollama}]", "f.yaml: backends[0].url: required"),
        (
            "backends: [{name: a, kind: ollama, url: 'x:11434'}]",
            "backends[0].url: 'x:11434' is not",
        ),
        (
            "backends: [{name: a, kind: local}, {name: a, kind: local}]",
            "f.yaml: backends[1].name: duplicate backend name 'a'",
        ),
        (
            "backends: [{name: a, kind: openai, url: 'http://x/v1', api_key: '${NOPE}'}]",
            "f.yaml: backends[0].api_key: environment variable NOPE is not set",
        ),
        # Each kind's schema has its own keys: the embedded engine's are not Ollama's.
        (
            "backends: [{name: a, kind: ollama, url: 'http://x', n_ctx: 2048}]",
            "f.yaml: backends[0]: object contains unknown field 'n_ctx'",
        ),
        (
            "backends: [{name: a, kind: local, sampling_extras: true}]",
            "f.yaml: backends[0]: object contains unknown field 'sampling_extras'",
        ),
        ("backends: [{name: a, kind: local, n_ctx: big}]", "f.yaml: backends[0].n_ctx: expected"),
        ("backends: {a: 1}", "f.yaml: backends: expected a list of backends"),
        ("aliases: {a: A}", "f.yaml: aliases.a: an alias cannot point at itself"),
        ("server: [1, 2", "f.yaml: line 1: invalid YAML"),
        ("- 1\n- 2", "f.yaml: (top level): expected a mapping"),
        ("routing: {strategy: fastest}", "f.yaml: routing.strategy: invalid enum value 'fastest'"),
        ("routing: {retries: 50}", "f.yaml: routing.retries: must be between 0 and 10"),
        ("routing: {retry: 2}", "f.yaml: routing: object contains unknown field 'retry'"),
        ("routing: {backoff: 5, backoff_max: 1}", "f.yaml: routing.backoff: must be at least 0"),
        ("routing: {cooldown: {failures: 0}}", "f.yaml: routing.cooldown.failures: must be at"),
        ("routing: {health: {interval: -1}}", "f.yaml: routing.health.interval: must be at"),
        ("routing: {queue_depth: -1}", "f.yaml: routing.queue_depth: must be at least 0"),
        ("routing: {switch_after: -1}", "f.yaml: routing.switch_after: must be at least 0"),
        (
            "backends: [{name: a, kind: ollama, url: 'http://x', vram: lots}]",
            "f.yaml: backends[0].vram: not a size: 'lots' (write it like 24GiB or 16GB)",
        ),
        (
            "backends: [{name: a, kind: local, vram: 8GB}]",
            "f.yaml: backends[0]: object contains unknown field 'vram'",
        ),
        (
            "routing: {models: {m: {force: true}}}",
            "f.yaml: routing.models.m.force: there are no defaults to force",
        ),
        (
            "routing: {models: {m: {defaults: {keep_alive: '300'}}}}",
            "f.yaml: routing.models.m.defaults.keep_alive: '300' is not a duration",
        ),
        (
            "routing: {models: {m: {defaults: {num_ctxx: 1}}}}",
            "f.yaml: routing.models.m.defaults: object contains unknown field 'num_ctxx'",
        ),
        (
            "backends: [{name: a, kind: local, weight: 0}]",
            "f.yaml: backends[0].weight: must be above 0",
        ),
        (
            "backends: [{name: a, kind: local, max_in_flight: 0}]",
            "f.yaml: backends[0].max_in_flight: must be at least 1",
        ),
        (
            "backends: [{name: a, kind: ollama, url: 'http://x', timeouts: {first_token: 0}}]",
            "f.yaml: backends[0].timeouts.first_token: must be above 0 (or null)",
        ),
        (
            "routing: {models: {m: {fallbacks: ['M:latest']}}}",
            "f.yaml: routing.models.m.fallbacks[0]: a model cannot fall back to itself",
        ),
        (
            "backends: [{name: a, kind: local}]\n"
            "routing: {models: {m: {deployments: {b: {weight: 2}}}}}",
            "f.yaml: routing.models.m.deployments.b: no backend named 'b'",
        ),
        (
            "backends: [{name: a, kind: local}]\n"
            "routing: {models: {m: {deployments: {a: {max_in_flight: 0}}}}}",
            "f.yaml: routing.models.m.deployments.a.max_in_flight: must be at least 1",
        ),
        (
            "backends: [{name: a, kind: local}]\naliases: {r: m}\n"
            "routing: {models: {r: {deployments: {a: {weight: 2}}}}}",
            "f.yaml: routing.models.r.deployments: 'r' is an alias",
        ),
        ("aliases: {a: [b]}", "f.yaml: aliases.a: expected 'str', got 'array'"),
        (
            "routing: {models: {m: {strategy: random}}}",
            "f.yaml: routing.models.m.strategy: invalid enum value 'random'",
        ),
    ],
)
def test_errors_name_the_file_the_key_and_the_problem(text: str, message: str) -> None:
    with pytest.raises(ConfigError) as e:
        parse(text, "f.yaml", env={})
    assert message in str(e.value)


def test_routing_defaults_suit_slow_local_models() -> None:
    cfg = parse("backends: [{name: a, kind: ollama, url: 'http://x'}]", "f.yaml")
    r, t = cfg.routing, cfg.backends[0].timeouts
    assert r.strategy == "least-in-flight" and r.retries == 2
    assert (r.cooldown.failures, r.cooldown.seconds) == (3, 10)
    assert r.health.interval == 30
    assert (t.connect, t.first_token, t.idle, t.total) == (5, 600, 300, None)


def test_where_the_config_comes_from(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    assert find_config(None, env={}) is None
    assert load(None, env={}).source == "embedded default"
    (tmp_path / "aistack.yaml").write_text("server: {port: 1111}")
    assert load(None, env={}).config.server.port == 1111
    other = tmp_path / "other.yaml"
    other.write_text("server: {port: 2222}")
    assert load(None, env={"AISTACK_CONFIG": str(other)}).config.server.port == 2222
    explicit = tmp_path / "explicit.yaml"
    explicit.write_text("server: {port: 3333}")
    assert load(str(explicit), env={"AISTACK_CONFIG": str(other)}).config.server.port == 3333


def test_a_missing_file_is_an_error_naming_it(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as e:
        load(str(tmp_path / "nope.yaml"), env={})
    assert "nope.yaml: cannot read" in str(e.value)


def test_each_kind_declares_its_schema_in_its_own_module_and_is_listed_once() -> None:
    """A kind is its module's `KIND` (schema and class) plus one entry in the registry."""
    import importlib
    import pkgutil

    import aistack.backends
    from aistack.backends.base import BackendConfig, Kind
    from aistack.backends.registry import KINDS

    declared = {}
    for m in pkgutil.iter_modules(aistack.backends.__path__):
        kind = getattr(importlib.import_module(f"aistack.backends.{m.name}"), "KIND", None)
        if isinstance(kind, Kind):
            declared[kind.name] = kind
    assert declared == KINDS
    assert all(issubclass(k.config, BackendConfig) for k in KINDS.values())
    cfg = parse(
        "backends:\n"
        "  - {name: box, kind: ollama, url: 'http://box:11434', weight: 2}\n"
        "  - {name: router, kind: openai, url: 'https://openrouter.ai/api/v1',"
        " sampling_extras: false}\n"
        "  - {name: tiny, kind: local, n_ctx: 2048}\n",
        "f.yaml",
    )
    types = [type(b) for b in cfg.backends]
    assert types == [KINDS["ollama"].config, KINDS["openai"].config, KINDS["local"].config]
    assert [b.billed_as for b in cfg.backends] == ["local", "metered", "local"]
    assert cfg.backends[0].weight == 2


def test_a_file_without_backends_keeps_the_embedded_model_and_says_so(tmp_path: Path) -> None:
    f = tmp_path / "aistack.yaml"
    f.write_text("auth: {admin_groups: [ai-admins]}\n")
    loaded = load(str(f), env={})
    assert [(b.name, b.kind) for b in loaded.config.backends] == [("local", "local")]
    assert any("no backends: key" in n and "backends: []" in n for n in loaded.notes)
    f.write_text("backends: []\n")
    none = load(str(f), env={})
    assert none.config.backends == [] and none.notes == ()


def test_aistack_master_key_alone_is_the_master_key_and_is_said() -> None:
    env = {"AISTACK_MASTER_KEY": "from-the-environment-0123"}
    for text in ("", "server: {port: 9000}", "auth: {master_key: null}"):
        loaded = load(None, env=env) if not text else None
        cfg = loaded.config if loaded else parse(text, "f.yaml", env=env)
        assert cfg.auth.master_key == env["AISTACK_MASTER_KEY"], text
    assert any("$AISTACK_MASTER_KEY" in n for n in load(None, env=env).notes)
    # A configured one wins; an empty interpolation means none (and the variable unset).
    cfg = parse("auth: {master_key: configured-key-0123456789}", "f.yaml", env=env)
    assert cfg.auth.master_key == "configured-key-0123456789"
    assert parse("auth: {master_key: '${M:-}'}", "f.yaml", env={}).auth.master_key is None
    with pytest.raises(ConfigError, match=r"auth\.master_key \(\$AISTACK_MASTER_KEY\): too short"):
        parse("", "f.yaml", env={"AISTACK_MASTER_KEY": "short"})


@pytest.mark.parametrize(
    ("text", "env", "message"),
    [
        ("", {"AISTACK_MASTER_KEY": "change-me-to-a-long-random-string"}, "placeholder"),
        ("auth: {master_key: replace-me-with-a-real-key}", {}, "placeholder"),
        ("auth: {master_key: your-master-key-goes-here}", {}, "placeholder"),
        ("database_url: 'postgresql://aistack:change-me@db/aistack'", {}, "placeholder"),
        ("auth: {watch: 0}", {}, "auth.watch: must be more than 0"),
    ],
)
def test_placeholders_from_examples_are_refused(
    text: str, env: dict[str, str], message: str
) -> None:
    with pytest.raises(ConfigError, match=message):
        parse(text, "f.yaml", env=env)


def test_the_data_dir_is_xdg_unless_the_config_says(tmp_path: Path) -> None:
    from aistack.config import data_dir_of

    cfg = parse("", "f.yaml", env={})
    assert data_dir_of(cfg, None, env={"HOME": "/home/ann"}) == Path(
        "/home/ann/.local/share/aistack"
    )
    assert data_dir_of(cfg, None, env={"XDG_DATA_HOME": "/srv"}) == Path("/srv/aistack")
    rel = parse("data_dir: state", "f.yaml", env={})
    assert data_dir_of(rel, tmp_path) == tmp_path / "state"


def test_workers_default_to_the_cores_unless_an_embedded_engine_owns_state() -> None:
    import os

    from aistack.config import worker_count

    remote = "backends: [{name: o, kind: ollama, url: 'http://h:11434'}]\n"
    cores = len(os.sched_getaffinity(0))
    assert worker_count(parse(remote + "vectors: {enabled: false}", "f.yaml"))[0] == cores
    n, why = worker_count(parse(remote, "f.yaml"))
    assert n == 1 and "vector" in why  # the embedded vector store: one owner
    assert worker_count(parse(EMBEDDED_DEFAULT, "embedded default"))[0] == 1  # the local model
    local3 = "backends: [{name: a, kind: local}]\nvectors: {enabled: false}\nserver: {workers: 3}"
    assert worker_count(parse(local3, "f.yaml")) == (3, "server.workers")  # as asked
    with pytest.raises(ConfigError, match=r"server.workers: the embedded vector store"):
        parse(remote + "server: {workers: 2}", "f.yaml")
    with pytest.raises(ConfigError, match=r"server.workers: must be between 1 and 256"):
        parse(remote + "server: {workers: 0}", "f.yaml")
