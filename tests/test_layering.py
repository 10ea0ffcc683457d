"""Dependencies flow one way: core <- dialects <- backends, store, limits <- routing <- access
<- service <- http/cli.

Every import in src/aistack (including ones inside functions) is checked against the
layer of the module doing the importing. A new package must be given a layer here.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parent.parent / "src" / "aistack"

LAYERS: dict[str, int] = {
    "core": 0,
    "dialects": 1,
    "config": 1,
    "backends": 2,
    "store": 2,
    "limits": 2,
    "routing": 3,
    "fleet": 3,
    "access": 4,
    "service": 5,
    "doctor": 5,
    "observability": 6,
    "http": 6,
    "console": 6,
    "cli": 7,
}

# The core and the dialects are pure: no I/O, no framework.
PURE_FORBIDDEN = {"asyncio", "socket", "uvicorn", "httptools", "llama_cpp", "sqlite3", "ssl"}


def _layer_of(module: str) -> tuple[str, int] | None:
    parts = module.split(".")
    if parts[0] != "aistack":
        return None
    if len(parts) == 1:
        return ("aistack", -1)  # the package root (its version) is importable anywhere
    top = parts[1]
    if top not in LAYERS:
        raise AssertionError(f"aistack.{top} has no layer in tests/test_layering.py")
    return top, LAYERS[top]


def _modules() -> list[Path]:
    return sorted(p for p in SRC.rglob("*.py"))


def _name(path: Path) -> str:
    rel = path.relative_to(SRC.parent).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _imports(path: Path) -> list[str]:
    tree = ast.parse(path.read_text())
    out: list[str] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out += [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            out.append(node.module)
    return out


@pytest.mark.parametrize("path", _modules(), ids=lambda p: _name(p))
def test_imports_only_point_down(path: Path) -> None:
    me = _layer_of(_name(path))
    assert me is not None
    top, level = me
    for imp in _imports(path):
        other = _layer_of(imp)
        if other is None:
            if top in ("core", "dialects"):
                assert imp.split(".")[0] not in PURE_FORBIDDEN, f"{_name(path)} imports {imp}"
            continue
        assert other[1] <= level, f"{_name(path)} ({top}) imports {imp} ({other[0]})"
