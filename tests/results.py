"""What a failed run leaves behind: the failing tests' names and their processes' logs.

A failure on a busy machine is often not reproducible, so its evidence is kept when it
happens: each failing test gets a folder under build/test-results/failures/ with the
logs of every process (gateways, backends, ComfyUI) that was running while it ran,
build/test-results/failed.txt lists the failing tests (one node id a line, ready for
`make unit ARGS="$(cat build/test-results/failed.txt)"`), and the run ends by naming
them again, after the tracebacks. `make test` also writes junit XML beside them.
The processes' own logs live in pytest's temporary folders, which later runs delete.
"""

from __future__ import annotations

import re
import shutil
import time
from collections.abc import Generator
from dataclasses import dataclass
from pathlib import Path

import pytest

# A log is kept whole up to this size; a bigger one keeps its end (where failures are).
MAX_LOG_BYTES = 4 * 1024 * 1024


@dataclass
class ProcessLog:
    path: Path
    started: float
    stopped: float | None = None

    def stop(self) -> None:
        if self.stopped is None:
            self.stopped = time.monotonic()


_LOGS: list[ProcessLog] = []


def process_log(path: Path) -> ProcessLog:
    """Register the log of a process just started; call `.stop()` when it has ended."""
    entry = ProcessLog(path, time.monotonic())
    _LOGS.append(entry)
    return entry


def _results_dir(config: pytest.Config) -> Path:
    return config.rootpath / "build" / "test-results"


def _slug(nodeid: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.=-]+", "_", nodeid).strip("_")[:180]


class Results:
    def __init__(self, config: pytest.Config) -> None:
        self.dir = _results_dir(config)
        self.basetemp: Path | None = None
        self.failed: list[str] = []
        self._began: dict[str, float] = {}
        shutil.rmtree(self.dir / "failures", ignore_errors=True)
        self.dir.mkdir(parents=True, exist_ok=True)
        (self.dir / "failed.txt").unlink(missing_ok=True)

    @pytest.hookimpl(tryfirst=True)
    def pytest_runtest_logstart(self, nodeid: str) -> None:
        self._began[nodeid] = time.monotonic()

    @pytest.hookimpl(wrapper=True)
    def pytest_runtest_makereport(
        self, item: pytest.Item, call: pytest.CallInfo[None]
    ) -> Generator[None, pytest.TestReport, pytest.TestReport]:
        report = yield
        if report.failed:
            self._keep(item, report)
        return report

    def _keep(self, item: pytest.Item, report: pytest.TestReport) -> None:
        if item.nodeid not in self.failed:
            self.failed.append(item.nodeid)
            with (self.dir / "failed.txt").open("a") as f:
                f.write(item.nodeid + "\n")
        began = self._began.get(item.nodeid, 0.0)
        dest = self.dir / "failures" / _slug(item.nodeid)
        dest.mkdir(parents=True, exist_ok=True)
        (dest / f"{report.when}.txt").write_text(report.longreprtext)
        for log in _LOGS:
            if log.stopped is not None and log.stopped < began:
                continue  # ended before this test began
            if not log.path.exists():
                continue
            self._copy(log.path, dest)

    def _copy(self, src: Path, dest: Path) -> None:
        try:
            name = str(src.relative_to(self._base(src))).replace("/", "__")
        except ValueError:
            name = src.name
        size = src.stat().st_size
        with src.open("rb") as f:
            if size > MAX_LOG_BYTES:
                f.seek(size - MAX_LOG_BYTES)
            (dest / name).write_bytes(f.read())

    def _base(self, src: Path) -> Path:
        # Logs sit under pytest's basetemp (…/pytest-N/<test folder>/…): name them from
        # there, so two gateways' log.txt do not collide.
        for parent in src.parents:
            if re.fullmatch(r"pytest-\d+", parent.name):
                return parent
        return src.parent

    @pytest.hookimpl(trylast=True)
    def pytest_terminal_summary(self, terminalreporter: pytest.TerminalReporter) -> None:
        if not self.failed:
            return
        tr = terminalreporter
        tr.section(f"{len(self.failed)} failing test(s); their logs are kept", sep="=", red=True)
        for nodeid in self.failed:
            tr.line(f"FAILED {nodeid}")
            tr.line(f"       logs: {self.dir / 'failures' / _slug(nodeid)}")
        tr.line(f"the list: {self.dir / 'failed.txt'}")
