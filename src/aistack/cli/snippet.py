"""`aistack snippet APP`: the environment block that points an app at this gateway.

Reads only the config (for the gateway's URL and a default model); talks to nothing.
"""

from __future__ import annotations

import argparse
import os
import socket
import sys

import orjson

from aistack.cli._common import config_arg, load_config
from aistack.config import Config, ConfigError
from aistack.doctor.snippets import APPS, Snippet, SnippetError, build, render


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    s = sub.add_parser(
        "snippet",
        help="the env block (.env and Kubernetes) that points an app at aistack",
        description="Print the settings that point APP at this gateway: the right base URL "
        "form (native or /v1), the model name as the app compares it, and a key.",
    )
    s.add_argument("app", choices=list(APPS), metavar="APP", help=", ".join(APPS))
    config_arg(s)
    s.add_argument(
        "--url",
        help="the gateway's URL as the app reaches it (default: server.public_url, "
        "else built from server.host and server.port)",
    )
    s.add_argument("--model", help="the model the app uses (default: the first alias)")
    s.add_argument(
        "--image-model",
        help="the image model, for apps that make images (default: from the comfyui backends)",
    )
    s.add_argument(
        "--key-file", metavar="FILE", help="an existing key to put in the snippet, from a file"
    )
    s.add_argument(
        "--key-env",
        metavar="NAME",
        help="an existing key to put in the snippet, from the environment variable NAME "
        "(e.g. AISTACK_KEY)",
    )
    # Taken only to refuse it: a key on the command line shows in every user's `ps`.
    s.add_argument("--key", dest="key_on_command_line", help=argparse.SUPPRESS)
    s.add_argument(
        "--create-key",
        action="store_true",
        help="mint a key for this app (as `aistack keys create` does) and put it in",
    )
    s.add_argument("--key-name", help="with --create-key: the key's name (default: APP)")
    s.add_argument(
        "--key-models",
        metavar="GLOBS",
        help="with --create-key: models the key may use, comma-separated globs (default all)",
    )
    s.add_argument(
        "--via",
        choices=("ollama", "openai"),
        help="for apps that speak both (open-webui, paperless-ai): which API to use "
        "(default: native, or OpenAI when there is a key, since only that carries it)",
    )
    s.add_argument(
        "--format",
        choices=("all", "env", "k8s", "config"),
        default="all",
        help="one form only: env (.env), k8s (env list YAML), config (the app's own file)",
    )
    s.add_argument("--json", action="store_true", help="print JSON")
    s.set_defaults(func=_run)


def default_url(cfg: Config) -> str:
    public = cfg.server.public_url
    if public:
        return str(public).rstrip("/")
    host = cfg.server.host
    if host in ("0.0.0.0", "::", ""):
        host = socket.getfqdn()
    if ":" in host:
        host = f"[{host}]"
    return f"http://{host}:{cfg.server.port}"


def default_model(cfg: Config) -> str:
    if cfg.aliases:
        return next(iter(cfg.aliases))
    for b in cfg.backends:
        if b.models:
            return b.models[0]
    from aistack.backends.local import DEFAULT_MODEL, LocalConfig

    for b in cfg.backends:
        if isinstance(b, LocalConfig):
            return b.model_name or DEFAULT_MODEL
    return DEFAULT_MODEL


def default_image_model(cfg: Config) -> str | None:
    """The image model from the config, "" when images are served but which is only
    known by asking (checkpoints), None without a comfyui backend."""
    from aistack.backends.comfyui import ComfyConfig

    comfy = [b for b in cfg.backends if isinstance(b, ComfyConfig)]
    if not comfy:
        return None
    if cfg.images.default_model:
        return cfg.images.default_model
    return next((n for b in comfy for n in b.workflows), "")


def create_key(args: argparse.Namespace) -> str:
    """A new virtual key named after the app, in the configured store; the key itself."""
    from aistack.access.gate import new_record
    from aistack.cli.db import open_configured_store
    from aistack.store import StoreError

    models = [m.strip() for m in (args.key_models or "").split(",") if m.strip()]
    try:
        store = open_configured_store(args.config)
    except (ConfigError, StoreError) as e:
        raise SnippetError(str(e)) from None
    try:
        new, rec = new_record(args.key_name or args.app, models=models)
        store.create_key(rec)
    except (ValueError, StoreError) as e:
        raise SnippetError(str(e)) from None
    finally:
        store.close()
    # On stderr, so stdout stays the snippet alone.
    print(
        f"created key {rec.id} for {rec.name} (models: {', '.join(rec.models) or 'all'}); "
        "it is in the snippet and shown nowhere else",
        file=sys.stderr,
    )
    return new.key


def given_key(args: argparse.Namespace) -> str | None:
    """The existing key to put in the snippet: from --key-file or --key-env, never from
    the command line. $AISTACK_KEY is read only when named: other commands take it as
    the admin key, which must not end up in an app's settings unasked."""
    if args.key_on_command_line is not None:
        raise SnippetError(
            "--key: not on the command line, where every user's `ps` shows it: put the "
            "key in a file (--key-file FILE) or an environment variable (--key-env NAME)"
        )
    if args.key_file and args.key_env:
        raise SnippetError("give --key-file or --key-env, not both")
    if args.key_file:
        try:
            with open(args.key_file) as f:
                key = f.read().strip()
        except OSError as e:
            raise SnippetError(f"--key-file {args.key_file}: {e.strerror or e}") from None
        if not key:
            raise SnippetError(f"--key-file {args.key_file}: the file is empty")
        return key
    if args.key_env:
        key = os.environ.get(args.key_env, "").strip()
        if not key:
            raise SnippetError(f"--key-env {args.key_env}: that variable is not set or empty")
        return key
    return None


def _run(args: argparse.Namespace) -> int:
    loaded = load_config(args)
    if loaded is None:
        return 2
    cfg = loaded.config

    def snippet(key: str | None) -> Snippet:
        return build(
            args.app,
            base=args.url or default_url(cfg),
            model=args.model or default_model(cfg),
            key=key,
            via=args.via,
            images=args.image_model or default_image_model(cfg),
        )

    try:
        key = given_key(args)
        if args.create_key and key is not None:
            raise SnippetError("give --key-file, --key-env or --create-key, not two of them")
        if (args.key_name or args.key_models) and not args.create_key:
            raise SnippetError("--key-name and --key-models go with --create-key")
        s = snippet(key or ("-" if args.create_key else None))  # checks before minting
        if args.format == "config" and s.config is None:
            raise SnippetError(f"{s.title} has no config form; try --format all")
        if args.create_key:
            s = snippet(create_key(args))
    except SnippetError as e:
        print(f"aistack: {e}", file=sys.stderr)
        return 2
    if args.json:
        sys.stdout.write(orjson.dumps(s.to_json(), option=orjson.OPT_INDENT_2).decode() + "\n")
        return 0
    sys.stdout.write(render(s, args.format))
    return 0
