"""`aistack`: the command line. Subcommands register here; each lives in its own module."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable

from aistack import __version__

Command = Callable[[argparse.Namespace], int]


def _serve(args: argparse.Namespace) -> int:
    from aistack.cli.serve import serve

    return serve(args)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="aistack",
        description="One endpoint for a self-hosted AI stack: Ollama and OpenAI APIs over "
        "every backend you run.",
    )
    p.add_argument("--version", action="version", version=f"aistack {__version__}")
    sub = p.add_subparsers(dest="command", metavar="COMMAND")

    s = sub.add_parser("serve", help="run the gateway")
    s.add_argument(
        "--config",
        metavar="FILE",
        help="YAML config (default: $AISTACK_CONFIG, ./aistack.yaml, else the embedded default)",
    )
    s.add_argument("--host", help="address to bind (overrides server.host)")
    s.add_argument("--port", type=int, help="port to bind (overrides server.port)")
    s.set_defaults(func=_serve)

    # The fleet and the runbook: each module adds its own subcommands.
    from aistack.cli import doctor, models, snippet

    for module in (models, doctor, snippet):
        module.register(sub)
    return p


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    func: Command | None = getattr(args, "func", None)
    if func is None:
        parser.print_help()
        return 2
    return func(args)


if __name__ == "__main__":
    sys.exit(main())
