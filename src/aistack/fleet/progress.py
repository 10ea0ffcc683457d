"""A pull's progress in numbers a person reads: bytes, percent, speed, time left.

Ollama reports one layer (blob) at a time, each with its own `total` and `completed`;
a resumed pull starts a layer at the bytes it already has. The meter follows the layer
being downloaded, measures speed over a short window (so a resume's head start is not
counted as speed), and keeps the totals of every layer seen.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

from aistack.core.fleet import PullProgress

_UNITS = ("B", "KB", "MB", "GB", "TB")


def human_bytes(n: float) -> str:
    """Decimal units, as Ollama prints them: 2.1 GB."""
    if n < 1000:
        return f"{int(n)} B"
    for unit in _UNITS[1:]:
        n /= 1000
        if n < 1000 or unit == _UNITS[-1]:
            return f"{n:.1f} {unit}" if n < 100 else f"{n:.0f} {unit}"
    raise AssertionError("unreachable")  # pragma: no cover


def human_duration(seconds: float) -> str:
    s = max(0, round(seconds))
    if s < 60:
        return f"{s}s"
    m, s = divmod(s, 60)
    if m < 60:
        return f"{m}m{s:02d}s"
    h, m = divmod(m, 60)
    return f"{h}h{m:02d}m"


@dataclass
class Layer:
    digest: str
    total: int = 0
    completed: int = 0
    started_at: int = 0  # bytes already there when first seen (a resumed layer)


@dataclass
class PullMeter:
    """Feed it every progress item; read the current layer, speed and ETA."""

    clock: Callable[[], float] = time.monotonic
    window: float = 5.0
    layers: dict[str, Layer] = field(default_factory=dict)
    current: Layer | None = None
    status: str = ""
    _samples: deque[tuple[float, int]] = field(default_factory=deque)

    def update(self, p: PullProgress) -> None:
        self.status = p.status
        if not p.digest or not p.total:
            return
        layer = self.layers.get(p.digest)
        if layer is None:
            layer = Layer(p.digest, p.total, p.completed, started_at=p.completed)
            self.layers[p.digest] = layer
        layer.total = p.total
        layer.completed = max(layer.completed, p.completed)
        if self.current is not layer:
            self.current = layer
            self._samples.clear()
        now = self.clock()
        self._samples.append((now, layer.completed))
        while len(self._samples) > 2 and now - self._samples[0][0] > self.window:
            self._samples.popleft()

    @property
    def fraction(self) -> float:
        c = self.current
        return min(1.0, c.completed / c.total) if c is not None and c.total else 0.0

    @property
    def speed(self) -> float:
        """Bytes per second over the window; 0 until two samples are apart in time."""
        if len(self._samples) < 2:
            return 0.0
        (t0, c0), (t1, c1) = self._samples[0], self._samples[-1]
        return (c1 - c0) / (t1 - t0) if t1 > t0 else 0.0

    @property
    def eta(self) -> float | None:
        c = self.current
        v = self.speed
        if c is None or v <= 0:
            return None
        return max(0.0, (c.total - c.completed) / v)

    @property
    def total_bytes(self) -> int:
        return sum(layer.total for layer in self.layers.values())

    @property
    def completed_bytes(self) -> int:
        return sum(layer.completed for layer in self.layers.values())

    def line(self, width: int = 20) -> str:
        """`pulling 8934d96d3f08  45% ▕█████     ▏ 1.2/2.6 GB  41 MB/s  34s`."""
        c = self.current
        if c is None or not self.status.startswith("pulling "):
            return self.status
        filled = int(self.fraction * width)
        bar = "█" * filled + " " * (width - filled)
        parts = [
            f"{self.status}  {int(self.fraction * 100):3d}% ▕{bar}▏",
            f"{human_bytes(c.completed)}/{human_bytes(c.total)}",
        ]
        if self.speed > 0:
            parts.append(f"{human_bytes(self.speed)}/s")
        eta = self.eta
        if eta is not None and c.completed < c.total:
            parts.append(human_duration(eta))
        return "  ".join(parts)
