"""Declarative sync: each backend's `models:` list is its desired state.

`plan` asks every managed backend what it has and compares it with what the config
declares: declared and present is kept, declared and absent is pulled, present and not
declared is an extra (reported, or deleted with `prune`). `apply` runs the plan one
step at a time. A pull that fails is retried (Ollama resumes a pull where it stopped,
so a retry, or the next run after an interruption, does not start over); a step that
still fails does not stop the others, and the result says whether everything worked.

Backends that declare nothing are left alone (an empty list must not mean "delete
everything"), and backends that cannot pull (OpenAI-compatible, embedded) are skipped
with the reason.
"""

from __future__ import annotations

import asyncio
from collections.abc import Collection, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, Literal, Protocol

from aistack.backends.base import Backend, manages_models, store_of
from aistack.core.errors import ErrorKind, GatewayError
from aistack.core.fleet import PullProgress
from aistack.core.models import canonical

StepAction = Literal["keep", "pull", "extra", "prune"]


@dataclass
class Step:
    backend: str
    model: str
    action: StepAction
    ok: bool | None = None  # None: not run (keep, extra, or a dry run)
    error: str = ""
    attempts: int = 0


@dataclass
class Plan:
    steps: list[Step] = field(default_factory=list)
    # Backends that could not be planned (unreachable, or an error listing models).
    problems: dict[str, str] = field(default_factory=dict)
    # Backends sync leaves alone, and why.
    skipped: dict[str, str] = field(default_factory=dict)

    @property
    def changes(self) -> list[Step]:
        return [s for s in self.steps if s.action in ("pull", "prune")]

    @property
    def ok(self) -> bool:
        return not self.problems and all(s.ok is not False for s in self.steps)

    def to_json(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "steps": [asdict(s) for s in self.steps],
            "problems": self.problems,
            "skipped": self.skipped,
        }


async def _plan_one(
    b: Backend, declared: Sequence[str], prune: bool
) -> tuple[list[Step], str | None]:
    try:
        cards = await b.list_models()
    except GatewayError as e:
        return [], e.message
    have = {canonical(c.name): c.name for c in cards}
    steps: list[Step] = []
    want: set[str] = set()
    for m in declared:
        key = canonical(m)
        if key in want:
            continue
        want.add(key)
        steps.append(Step(b.name, m, "keep" if key in have else "pull"))
    for key, name in sorted(have.items()):
        if key not in want:
            steps.append(Step(b.name, name, "prune" if prune else "extra"))
    return steps, None


async def plan(
    backends: Sequence[Backend],
    declared: Mapping[str, Sequence[str]],
    *,
    prune: bool = False,
    only: Collection[str] = (),
) -> Plan:
    p = Plan()
    todo: list[Backend] = []
    for b in backends:
        if only and b.name not in only:
            continue
        if not declared.get(b.name):
            p.skipped[b.name] = "declares no models (models: []), so sync leaves it alone"
        elif not manages_models(b):
            p.skipped[b.name] = f"cannot pull: {b.unmanaged_reason}"
        else:
            todo.append(b)
    results = await asyncio.gather(*(_plan_one(b, declared[b.name], prune) for b in todo))
    for b, (steps, problem) in zip(todo, results, strict=True):
        if problem is not None:
            p.problems[b.name] = problem
        p.steps += steps
    return p


class Reporter(Protocol):
    def started(self, step: Step) -> None: ...

    def progress(self, step: Step, p: PullProgress) -> None: ...

    def retrying(self, step: Step, error: str, delay: float) -> None: ...

    def finished(self, step: Step) -> None: ...


async def pull_one(b: Backend, step: Step, reporter: Reporter) -> None:
    async for p in store_of(b, "pull").pull(step.model):
        reporter.progress(step, p)


async def apply(
    p: Plan,
    backends: Mapping[str, Backend],
    reporter: Reporter,
    *,
    retries: int = 2,
    retry_delay: float = 2.0,
) -> bool:
    """Run the pulls and prunes of a plan, one at a time; True if every step worked."""
    for step in p.changes:
        b = backends[step.backend]
        reporter.started(step)
        while True:
            step.attempts += 1
            try:
                if step.action == "pull":
                    await pull_one(b, step, reporter)
                else:
                    try:
                        await store_of(b, "delete").delete(step.model)
                    except GatewayError as e:
                        if e.kind is not ErrorKind.NOT_FOUND:  # gone already is fine
                            raise
                step.ok = True
                step.error = ""
                break
            except GatewayError as e:
                step.ok = False
                step.error = e.message
                if step.action != "pull" or step.attempts > retries:
                    break
                delay = retry_delay * step.attempts
                reporter.retrying(step, e.message, delay)
                await asyncio.sleep(delay)
        reporter.finished(step)
    return p.ok
