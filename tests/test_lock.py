"""The locks cover what pyproject.toml asks for, exactly, with hashes.

`make serve`, `make test` and the Dockerfile install locks/*.txt with
`pip install --require-hashes`, then aistack itself with `--no-deps`: a dependency that
pyproject.toml names (or moves) and the lock does not carry would be missing or at the
wrong version, and nothing else would notice. Each lock must pin every requirement of
its extras (and the build system, installed without build isolation) at a version the
specifier allows, with at least one sha256, and hold the whole closure: every
requirement of a locked package, as its installed metadata states it, is locked too.
The checker is tried on a planted pyproject that moved a pin, so a checker that stopped
seeing drift would fail.
"""

from __future__ import annotations

import re
import tomllib
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

ROOT = Path(__file__).resolve().parent.parent
LOCKS = ROOT / "locks"
# Each lock and the extras it serves (the Dockerfile's LOCK build argument picks one).
SETS = {
    "requirements.txt": ("local", "postgres", "redis", "test"),
    "image.txt": ("postgres", "redis"),
    "image-local.txt": ("local", "postgres", "redis"),
}
_PIN = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)==([^\s\\;]+)")


@dataclass(frozen=True)
class Pin:
    version: str
    hashes: tuple[str, ...]


def parse_lock(text: str) -> dict[str, Pin]:
    """name -> Pin, from a requirements file with `name==version \\ --hash=...` entries."""
    pins: dict[str, Pin] = {}
    # Continuation lines belong to the entry above them.
    for entry in text.replace("\\\n", " ").splitlines():
        line = entry.split("#", 1)[0].strip()
        if not line:
            continue
        m = _PIN.match(line)
        assert m, f"not an exact pin: {line!r}"
        hashes = tuple(re.findall(r"--hash=sha256:([0-9a-f]{64})", line))
        pins[canonicalize_name(m.group(1))] = Pin(m.group(2), hashes)
    return pins


def roots(pyproject: dict[str, Any], extras: tuple[str, ...]) -> list[Requirement]:
    project = pyproject["project"]
    reqs = list(project["dependencies"])
    for extra in extras:
        reqs += project["optional-dependencies"][extra]
    reqs += pyproject["build-system"]["requires"]
    return [Requirement(r) for r in reqs]


def drift(pyproject: dict[str, Any], extras: tuple[str, ...], pins: dict[str, Pin]) -> list[str]:
    """What the lock gets wrong against pyproject's own requirements (empty: nothing)."""
    problems = []
    for name, pin in pins.items():
        if not pin.hashes:
            problems.append(f"{name}=={pin.version} has no --hash")
    for req in roots(pyproject, extras):
        if req.marker is not None and not req.marker.evaluate():
            continue
        pin = pins.get(canonicalize_name(req.name))
        if pin is None:
            problems.append(f"{req} is not in the lock")
        elif not req.specifier.contains(pin.version, prereleases=True):
            problems.append(f"{req} does not allow the locked {pin.version}")
    return problems


def closure_gaps(
    pyproject: dict[str, Any], extras: tuple[str, ...], pins: dict[str, Pin]
) -> list[str]:
    """Requirements of locked packages (their installed metadata) the lock lacks."""
    problems: list[str] = []
    todo = [(req, "pyproject.toml") for req in roots(pyproject, extras)]
    seen: set[tuple[str, frozenset[str]]] = set()
    while todo:
        req, wanted_by = todo.pop()
        name = canonicalize_name(req.name)
        key = (name, frozenset(req.extras))
        if key in seen:
            continue
        seen.add(key)
        pin = pins.get(name)
        if pin is None:
            problems.append(f"{req} (wanted by {wanted_by}) is not in the lock")
            continue
        if not req.specifier.contains(pin.version, prereleases=True):
            problems.append(f"{req} (wanted by {wanted_by}) does not allow {pin.version}")
        try:
            dist = metadata.distribution(name)
        except metadata.PackageNotFoundError:
            continue  # not installed here (an image-only package): pyproject's check holds
        for dep in map(Requirement, dist.requires or []):
            envs = [{"extra": e} for e in ("", *sorted(req.extras))]
            if dep.marker is None or any(dep.marker.evaluate(env) for env in envs):
                todo.append((dep, f"{name} {pin.version}"))
    return problems


@pytest.fixture(scope="module")
def pyproject() -> dict[str, Any]:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())


@pytest.mark.parametrize("lock", sorted(SETS))
def test_the_lock_pins_every_requirement_of_pyproject_with_hashes(
    lock: str, pyproject: dict[str, Any]
) -> None:
    pins = parse_lock((LOCKS / lock).read_text())
    assert drift(pyproject, SETS[lock], pins) == [], f"locks/{lock} is out of date: make lock"


@pytest.mark.parametrize("lock", sorted(SETS))
def test_the_lock_holds_the_whole_closure(lock: str, pyproject: dict[str, Any]) -> None:
    pins = parse_lock((LOCKS / lock).read_text())
    assert closure_gaps(pyproject, SETS[lock], pins) == [], f"locks/{lock}: make lock"


def test_the_image_locks_take_the_development_locks_versions() -> None:
    dev = parse_lock((LOCKS / "requirements.txt").read_text())
    for lock in ("image.txt", "image-local.txt"):
        for name, pin in parse_lock((LOCKS / lock).read_text()).items():
            assert name in dev and dev[name].version == pin.version, (lock, name, pin.version)


def test_the_installed_environment_is_the_lock() -> None:
    # make test installs the lock: what runs the suite is what was locked.
    for name, pin in parse_lock((LOCKS / "requirements.txt").read_text()).items():
        assert metadata.version(name) == pin.version, name


def test_the_checker_sees_a_moved_pin_a_new_dependency_and_a_missing_hash(
    pyproject: dict[str, Any],
) -> None:
    pins = parse_lock((LOCKS / "requirements.txt").read_text())
    planted = {**pyproject, "project": dict(pyproject["project"])}
    test_extra = [
        "pytest==0.0.1" if r.startswith("pytest==") else r
        for r in pyproject["project"]["optional-dependencies"]["test"]
    ]
    planted["project"]["optional-dependencies"] = {
        **pyproject["project"]["optional-dependencies"],
        "test": [*test_extra, "left-pad>=1"],
    }
    problems = drift(planted, SETS["requirements.txt"], pins)
    assert any(p.startswith("pytest==0.0.1 does not allow") for p in problems), problems
    assert "left-pad>=1 is not in the lock" in problems
    unhashed = {**pins, "uvloop": Pin(pins["uvloop"].version, ())}
    problems = drift(pyproject, SETS["requirements.txt"], unhashed)
    assert f"uvloop=={pins['uvloop'].version} has no --hash" in problems, problems
    without_anyio = {name: pin for name, pin in pins.items() if name != "anyio"}
    gaps = closure_gaps(pyproject, SETS["requirements.txt"], without_anyio)
    assert any(g.startswith("anyio") for g in gaps), gaps  # httpx, openai, ... need it


def test_make_and_the_dockerfile_install_from_the_locks_hash_checked() -> None:
    make = (ROOT / "Makefile").read_text()
    assert "LOCK   := locks/requirements.txt" in make
    assert "--require-hashes -r $(LOCK)" in make
    assert "--no-deps --no-build-isolation -e ." in make
    docker = (ROOT / "Dockerfile").read_text()
    assert "ARG LOCK=image\n" in docker
    assert '--require-hashes -r "locks/${LOCK}.txt"' in docker
    assert "--no-deps --no-build-isolation ." in docker
