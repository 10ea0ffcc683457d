"""Dependencies flow one way, with no circles.

core <- dialects <- backends, store, limits <- config <- routing, fleet <- access <- service,
doctor <- observability <- http <- the rooms (console, ...) <- rooms.py <- cli. (The config
sits above the backends: each kind declares the schema of its entries.)

Every import in src/aistack (including ones inside functions and under TYPE_CHECKING) is
checked against the layer of the module doing the importing: a package may import from
the layers below its own, and from a sibling (a package of its own layer) only where
SIBLINGS allows it, in one direction. No module may take part in an import circle. A
new package must be given a layer here. The checks are tried on planted trees too, so a
checker that stopped seeing circles would fail.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parent.parent / "src" / "aistack"

LAYERS: dict[str, int] = {
    "core": 0,
    "dialects": 1,
    "backends": 2,
    "store": 2,
    "limits": 2,
    "config": 3,
    "routing": 4,
    "fleet": 4,
    "access": 5,
    "service": 6,
    "doctor": 6,
    "observability": 7,
    "http": 8,
    # The rooms: each declares its own routes (http/table.py) and knows no other room.
    "console": 9,
    "images": 9,
    "vectors": 9,
    # The house: the app with every room's routes.
    "rooms": 10,
    "cli": 11,
}

# Imports allowed between packages of the same layer: (importer, imported).
SIBLINGS: frozenset[tuple[str, str]] = frozenset()

# The core and the dialects are pure: no I/O, no framework.
PURE = ("core", "dialects")
PURE_FORBIDDEN = {"asyncio", "socket", "uvicorn", "httptools", "llama_cpp", "sqlite3", "ssl"}


def modules(root: Path) -> dict[str, Path]:
    """Every module under the package at `root`, by dotted name."""
    out = {}
    for path in sorted(root.rglob("*.py")):
        parts = [root.name, *path.relative_to(root).with_suffix("").parts]
        if parts[-1] == "__init__":
            parts.pop()
        out[".".join(parts)] = path
    return out


def imports(path: Path, known: dict[str, Path]) -> list[str]:
    """What `path` imports, naming the module when `from X import Y` takes a module."""
    out: list[str] = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            out += [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            subs = [f"{node.module}.{a.name}" for a in node.names]
            taken = [s for s in subs if s in known]
            out += taken or [node.module]
            if taken and len(taken) < len(subs):
                out.append(node.module)
    return out


def graph(root: Path) -> dict[str, set[str]]:
    """The import graph between the modules of the package at `root`."""
    known = modules(root)
    return {
        name: {i for i in imports(path, known) if i in known and i != name}
        for name, path in known.items()
    }


def circles(g: dict[str, set[str]]) -> list[list[str]]:
    """The import circles of `g` (its strongly connected components of more than one
    module), each sorted; Tarjan's algorithm, without recursion."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    on: set[str] = set()
    stack: list[str] = []
    found: list[list[str]] = []
    for start in sorted(g):
        if start in index:
            continue
        work = [(start, iter(sorted(g[start])))]
        index[start] = low[start] = len(index)
        stack.append(start)
        on.add(start)
        while work:
            node, edges = work[-1]
            nxt = next(edges, None)
            if nxt is not None:
                if nxt not in index:
                    index[nxt] = low[nxt] = len(index)
                    stack.append(nxt)
                    on.add(nxt)
                    work.append((nxt, iter(sorted(g.get(nxt, ())))))
                elif nxt in on:
                    low[node] = min(low[node], index[nxt])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                comp = []
                while True:
                    m = stack.pop()
                    on.discard(m)
                    comp.append(m)
                    if m == node:
                        break
                if len(comp) > 1:
                    found.append(sorted(comp))
    return found


def package_of(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else ""


def wrong_way(
    root: Path, layers: dict[str, int], siblings: frozenset[tuple[str, str]]
) -> list[str]:
    """Imports that point up a layer, or sideways without leave: `importer -> imported`."""
    out = []
    known = modules(root)
    unlayered = sorted({package_of(n) for n in known} - set(layers) - {""})
    for name, path in known.items():
        me = package_of(name)
        if me not in layers:
            continue  # the package root (its version) imports nothing of ours
        for imp in imports(path, known):
            if imp.split(".")[0] != root.name:
                continue
            other = package_of(imp)
            if not other or other == me:
                continue  # the root's version is importable anywhere; inside a package
            if (other in layers and layers[other] > layers[me]) or (
                layers[other] == layers[me] and (me, other) not in siblings
            ):
                out.append(f"{name} ({me}) -> {imp} ({other})")
    return out + [f"the package {p} has no layer" for p in unlayered]


def test_imports_only_point_down() -> None:
    assert wrong_way(SRC, LAYERS, SIBLINGS) == []


def test_no_module_takes_part_in_an_import_circle() -> None:
    assert circles(graph(SRC)) == []


def test_sibling_leave_goes_one_way_only() -> None:
    assert not {(b, a) for a, b in SIBLINGS} & SIBLINGS


@pytest.mark.parametrize(
    "name", [n for n in modules(SRC) if package_of(n) in PURE], ids=lambda n: n
)
def test_the_core_and_the_dialects_do_no_io(name: str) -> None:
    for imp in imports(modules(SRC)[name], {}):
        assert imp.split(".")[0] not in PURE_FORBIDDEN, f"{name} imports {imp}"


# -- the checks, tried on planted trees


def _plant(tmp: Path, files: dict[str, str]) -> Path:
    root = tmp / "pkg"
    for rel, text in files.items():
        p = root / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(text)
    for d in [root, *[p for p in root.rglob("*") if p.is_dir()]]:
        (d / "__init__.py").touch()
    return root


def test_a_planted_circle_is_found(tmp_path: Path) -> None:
    root = _plant(
        tmp_path,
        {
            "low/a.py": "from pkg.low import b\n",
            "low/b.py": "def f():\n    from pkg.low.c import g\n",
            "low/c.py": "import pkg.low.a\n\ndef g(): ...\n",
            "low/d.py": "from pkg.low import a\n",  # imports the circle, is not in it
        },
    )
    assert circles(graph(root)) == [["pkg.low.a", "pkg.low.b", "pkg.low.c"]]
    # Breaking it clears it.
    (root / "low" / "c.py").write_text("def g(): ...\n")
    assert circles(graph(root)) == []


def test_a_planted_circle_between_two_packages_of_one_layer_is_refused(tmp_path: Path) -> None:
    """The console <-> http circle this test used to let through (same layer, both ways)."""
    root = _plant(
        tmp_path,
        {
            "web/app.py": "from pkg.ui import pages\n",
            "ui/pages.py": "def f():\n    from pkg.web.app import helper\n",
        },
    )
    layers = {"web": 1, "ui": 1}
    assert circles(graph(root)) == [["pkg.ui.pages", "pkg.web.app"]]
    assert sorted(wrong_way(root, layers, frozenset())) == [
        "pkg.ui.pages (ui) -> pkg.web.app (web)",
        "pkg.web.app (web) -> pkg.ui.pages (ui)",
    ]
    # Leave one way makes only the other way wrong.
    assert wrong_way(root, layers, frozenset({("web", "ui")})) == [
        "pkg.ui.pages (ui) -> pkg.web.app (web)"
    ]


def test_an_import_up_a_layer_or_from_a_package_without_one_is_refused(tmp_path: Path) -> None:
    root = _plant(
        tmp_path,
        {"low/a.py": "from pkg.high.b import x\n", "high/b.py": "x = 1\n", "new/c.py": ""},
    )
    assert wrong_way(root, {"low": 0, "high": 1}, frozenset()) == [
        "pkg.low.a (low) -> pkg.high.b (high)",
        "the package new has no layer",
    ]
