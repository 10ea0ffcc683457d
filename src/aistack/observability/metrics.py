"""A small Prometheus registry: counters, gauges and histograms with fixed label names.

Why not prometheus_client: every `.labels(...)` there takes a lock and builds a child
object lookup; on a path that runs thousands of times a second, a dict keyed by the
label tuple and a float add is enough (one event loop thread writes). Exposition
follows the text format 0.0.4; collectors fill gauges at scrape time from live state
(in-flight requests, deployment health, queue depths) so the request path never
updates them.
"""

from __future__ import annotations

import math
from bisect import bisect_left
from collections.abc import Callable, Iterable, Sequence
from typing import Any

LabelValues = tuple[str, ...]


def _escape(v: str) -> str:
    return v.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _fmt(v: float) -> str:
    if v == math.inf:
        return "+Inf"
    if v == int(v) and abs(v) < 1e15:
        return str(int(v))
    return repr(v)


class _Metric:
    kind = ""

    def __init__(self, name: str, help: str, labels: Sequence[str]) -> None:
        self.name = name
        self.help = help
        self.labels = tuple(labels)

    def _label_text(self, values: LabelValues, extra: str = "") -> str:
        parts = [f'{k}="{_escape(v)}"' for k, v in zip(self.labels, values, strict=True)]
        if extra:
            parts.append(extra)
        return "{" + ",".join(parts) + "}" if parts else ""

    def samples(self) -> Iterable[str]:
        raise NotImplementedError

    def expose(self) -> str:
        head = f"# HELP {self.name} {self.help}\n# TYPE {self.name} {self.kind}\n"
        return head + "".join(f"{s}\n" for s in self.samples())


class Counter(_Metric):
    kind = "counter"

    def __init__(self, name: str, help: str, labels: Sequence[str] = ()) -> None:
        super().__init__(name, help, labels)
        self.values: dict[LabelValues, float] = {}

    def inc(self, values: LabelValues = (), amount: float = 1.0) -> None:
        self.values[values] = self.values.get(values, 0.0) + amount

    def get(self, values: LabelValues = ()) -> float:
        return self.values.get(values, 0.0)

    def samples(self) -> Iterable[str]:
        for values, v in sorted(self.values.items()):
            yield f"{self.name}{self._label_text(values)} {_fmt(v)}"


class Gauge(_Metric):
    kind = "gauge"

    def __init__(self, name: str, help: str, labels: Sequence[str] = ()) -> None:
        super().__init__(name, help, labels)
        self.values: dict[LabelValues, float] = {}

    def set(self, values: LabelValues, value: float) -> None:
        self.values[values] = value

    def clear(self) -> None:
        self.values.clear()

    def samples(self) -> Iterable[str]:
        for values, v in sorted(self.values.items()):
            yield f"{self.name}{self._label_text(values)} {_fmt(v)}"


class Histogram(_Metric):
    kind = "histogram"

    def __init__(
        self, name: str, help: str, labels: Sequence[str], buckets: Sequence[float]
    ) -> None:
        super().__init__(name, help, labels)
        self.buckets = tuple(sorted(buckets))
        # Per label set: counts per bucket (not cumulative), then sum and count.
        self.values: dict[LabelValues, list[float]] = {}

    def observe(self, values: LabelValues, v: float) -> None:
        row = self.values.get(values)
        if row is None:
            row = self.values[values] = [0.0] * (len(self.buckets) + 3)
        row[bisect_left(self.buckets, v)] += 1
        row[-2] += v
        row[-1] += 1

    def samples(self) -> Iterable[str]:
        n = len(self.buckets)
        for values, row in sorted(self.values.items()):
            acc = 0.0
            for i, le in enumerate((*self.buckets, math.inf)):
                acc += row[i]
                bound = 'le="' + _fmt(le) + '"'
                yield f"{self.name}_bucket{self._label_text(values, bound)} {_fmt(acc)}"
            yield f"{self.name}_sum{self._label_text(values)} {_fmt(row[n + 1])}"
            yield f"{self.name}_count{self._label_text(values)} {_fmt(row[n + 2])}"


class Registry:
    def __init__(self) -> None:
        self.metrics: list[_Metric] = []
        self.collectors: list[Callable[[], None]] = []

    def counter(self, name: str, help: str, labels: Sequence[str] = ()) -> Counter:
        m = Counter(name, help, labels)
        self.metrics.append(m)
        return m

    def gauge(self, name: str, help: str, labels: Sequence[str] = ()) -> Gauge:
        m = Gauge(name, help, labels)
        self.metrics.append(m)
        return m

    def histogram(
        self, name: str, help: str, labels: Sequence[str], buckets: Sequence[float]
    ) -> Histogram:
        m = Histogram(name, help, labels, buckets)
        self.metrics.append(m)
        return m

    def collect_with(self, fn: Callable[[], None]) -> None:
        """Run `fn` before every scrape, to set gauges from live state."""
        self.collectors.append(fn)

    def expose(self) -> str:
        for fn in self.collectors:
            fn()
        return "".join(m.expose() for m in self.metrics)

    def snapshot(self) -> list[Any]:
        """Every metric's values, as JSON-able lists: what a worker sends the one that
        answers a scrape (see `merge`)."""
        for fn in self.collectors:
            fn()
        out: list[Any] = []
        for m in self.metrics:
            values: dict[LabelValues, Any] = getattr(m, "values", {})
            extra = list(m.buckets) if isinstance(m, Histogram) else []
            rows = [[list(k), v] for k, v in values.items()]
            out.append([m.name, m.kind, m.help, list(m.labels), extra, rows])
        return out


def merge(snapshots: Sequence[tuple[int, Any]]) -> str:
    """One exposition of several workers' snapshots (index, snapshot): counters and
    histograms summed (what the house did, whichever worker did it), gauges kept apart
    with a `worker` label (a sum of "backend up" or of a model's state means nothing;
    `sum without (worker)` adds the ones that add up)."""
    merged: dict[str, _Metric] = {}
    for index, snap in snapshots:
        for name, kind, help, labels, extra, rows in snap:
            m = merged.get(name)
            if m is None:
                if kind == "gauge":
                    m = Gauge(name, help, [*labels, "worker"])
                elif kind == "histogram":
                    m = Histogram(name, help, labels, extra)
                else:
                    m = Counter(name, help, labels)
                merged[name] = m
            for key, v in rows:
                k = tuple(key)
                if isinstance(m, Gauge):
                    m.values[(*k, str(index))] = v
                elif isinstance(m, Histogram):
                    row = m.values.get(k)
                    if row is None:
                        m.values[k] = list(v)
                    else:
                        for j, x in enumerate(v):
                            row[j] += x
                elif isinstance(m, Counter):
                    m.values[k] = m.values.get(k, 0.0) + v
    return "".join(m.expose() for m in merged.values())
