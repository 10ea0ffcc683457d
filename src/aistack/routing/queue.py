"""The line a request waits in when nothing can take it now: fair across keys.

One `FairQueue` per model. Each key (an app's key, or "" without one) has its own lane,
first in first out; the lanes take turns, one request each, so one app's burst of a
hundred requests cannot make another app's one request wait behind all of them. The
router hands a freed deployment to the request at the front (`peek`, then `pop`), so a
newcomer never overtakes a request already waiting.

A request waiting for several models at once (a model and its fallbacks) is in each of
their queues; whichever serves it first takes it out of all of them. Taking a request
out of the middle (its client went away, it timed out) is O(1): it is marked `done` and
the lanes drop done entries when they reach the front. `live` is exact at all times,
which is what the queue-depth metric and `/health` show.
"""

from __future__ import annotations

import asyncio
from collections import deque
from typing import Generic, TypeVar

from aistack.routing.loaded import Resident

S = TypeVar("S")  # what a request is granted (the router's Slot)


class Waiter(Generic[S]):
    """One request in line: who it is for fairness, since when, and what it got."""

    __slots__ = (
        "cold", "done", "drained", "future", "key", "not_before", "owed", "queues", "since",
        "slot", "strategy", "unload",
    )  # fmt: skip

    def __init__(self, key: str, since: float, strategy: int) -> None:
        self.key = key
        self.since = since  # monotonic, when it started waiting
        self.strategy = strategy
        self.queues: list[FairQueue[S]] = []
        self.done = False
        self.future: asyncio.Future[None] | None = None
        self.slot: S | None = None  # granted: counted in flight already
        self.unload: list[Resident] = []  # models to unload before its call (a switch)
        self.cold = False  # its model is to be loaded where it was granted
        self.not_before = 0.0  # a backend said busy: not before this (monotonic)
        self.owed = False  # has waited long enough that a switch is owed to it
        self.drained: list[Resident] = []  # models held back for its switch

    def wake(self) -> None:
        f = self.future
        if f is not None and not f.done():
            f.set_result(None)

    def leave(self) -> bool:
        """Out of every queue it is in; False if it was out already."""
        if self.done:
            return False
        self.done = True
        for q in self.queues:
            q.live -= 1
        return True


class FairQueue(Generic[S]):
    __slots__ = ("lanes", "live", "model", "order", "served", "waited")

    def __init__(self, model: str) -> None:
        self.model = model
        self.lanes: dict[str, deque[Waiter[S]]] = {}
        self.order: deque[str] = deque()  # keys with a lane, in turn
        self.live = 0  # waiting now
        # For metrics: requests that left the line with a deployment, and their wait.
        self.served = 0
        self.waited = 0.0

    def push(self, w: Waiter[S]) -> None:
        lane = self.lanes.get(w.key)
        if lane is None:
            lane = self.lanes[w.key] = deque()
            self.order.append(w.key)
        lane.append(w)
        w.queues.append(self)
        self.live += 1

    def peek(self) -> Waiter[S] | None:
        """The request whose turn it is, or None."""
        order, lanes = self.order, self.lanes
        while order:
            key = order[0]
            lane = lanes[key]
            while lane and lane[0].done:
                lane.popleft()
            if lane:
                return lane[0]
            order.popleft()
            del lanes[key]
        return None

    def pop(self) -> Waiter[S] | None:
        """Take the request whose turn it is; its lane goes to the back of the turns."""
        w = self.peek()
        if w is None:
            return None
        key = self.order.popleft()
        lane = self.lanes[key]
        lane.popleft()
        if lane:
            self.order.append(key)
        else:
            del self.lanes[key]
        return w

    def waiting(self) -> list[Waiter[S]]:
        """Everyone in line, in no particular order (for /health: the longest wait)."""
        return [w for lane in self.lanes.values() for w in lane if not w.done]
