"""What `aistack doctor` reports: findings with a status, a detail and a one-line fix."""

from __future__ import annotations

import enum
import time
from dataclasses import asdict, dataclass, field
from typing import Any


class Status(enum.StrEnum):
    PASS = "PASS"  # noqa: S105  # a status, not a password
    WARN = "WARN"
    FAIL = "FAIL"
    SKIP = "SKIP"


@dataclass
class Finding:
    status: Status
    check: str  # url, reachable, declared, answers, alias, embedded, database, redis, gateway
    target: str  # backend, backend/model, alias, URL
    detail: str
    fix: str = ""
    seconds: float | None = None


def passed(check: str, target: str, detail: str, seconds: float | None = None) -> Finding:
    return Finding(Status.PASS, check, target, detail, seconds=seconds)


def failed(check: str, target: str, detail: str, fix: str, seconds: float | None = None) -> Finding:
    return Finding(Status.FAIL, check, target, detail, fix, seconds)


def warned(check: str, target: str, detail: str, fix: str, seconds: float | None = None) -> Finding:
    return Finding(Status.WARN, check, target, detail, fix, seconds)


def skipped(check: str, target: str, detail: str, fix: str = "") -> Finding:
    return Finding(Status.SKIP, check, target, detail, fix)


@dataclass
class Report:
    source: str
    findings: list[Finding] = field(default_factory=list)

    def count(self, status: Status) -> int:
        return sum(1 for f in self.findings if f.status is status)

    @property
    def ok(self) -> bool:
        return self.count(Status.FAIL) == 0

    def to_json(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "config": self.source,
            "summary": {s.value.lower(): self.count(s) for s in Status},
            "findings": [{**asdict(f), "status": f.status.value} for f in self.findings],
        }


def since(t: float) -> float:
    return round(time.monotonic() - t, 3)


def ms(seconds: float) -> str:
    return f"{seconds * 1000:.0f} ms" if seconds < 1 else f"{seconds:.1f} s"
