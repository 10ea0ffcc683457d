"""A pull's progress on the terminal, as Ollama's CLI draws it (`aistack models pull`,
`aistack models sync`)."""

from __future__ import annotations

import sys
import time
from typing import IO

from aistack.core.fleet import PullProgress
from aistack.fleet.progress import PullMeter


class ProgressPrinter:
    """Draws Ollama's progress: a redrawn bar on a terminal, sparse lines in a log."""

    def __init__(self, out: IO[str] | None = None, *, prefix: str = "") -> None:
        self.out = out or sys.stdout
        self.tty = self.out.isatty()
        self.meter = PullMeter()
        self.prefix = prefix
        self._digest = ""
        self._status = ""
        self._width = 0
        self._drawn_at = 0.0
        self._logged_pct = -1

    def update(self, p: PullProgress) -> None:
        m = self.meter
        m.update(p)
        if p.digest and p.total:
            if p.digest != self._digest:
                self._end_line()
                self._digest = p.digest
                self._logged_pct = -1
            self._status = p.status
            self._bar(final=p.completed >= p.total)
            return
        if p.status != self._status:
            self._end_line()
            self._digest = ""
            self._status = p.status
            self._print(self.prefix + p.status)

    def _bar(self, *, final: bool) -> None:
        now = time.monotonic()
        text = self.prefix + self.meter.line()
        if self.tty:
            if final or now - self._drawn_at >= 0.1:
                self._drawn_at = now
                pad = max(0, self._width - len(text))
                self.out.write("\r" + text + " " * pad)
                self.out.flush()
                self._width = len(text)
            return
        pct = int(self.meter.fraction * 10)  # a line per 10% in a log
        if pct != self._logged_pct or final:
            if final and self._logged_pct == 10:
                return
            self._logged_pct = 10 if final else pct
            self._print(text)

    def _end_line(self) -> None:
        if self.tty and self._width:
            self.out.write("\n")
            self.out.flush()
        self._width = 0

    def _print(self, text: str) -> None:
        self.out.write(text + "\n")
        self.out.flush()

    def close(self) -> None:
        self._end_line()
