"""The house's rooms, put together: the app with the gateway's route table and every
room's entries. The one module that knows which rooms there are.

A room (console/, vectors/, images/) keeps its code in its own package and
declares its routes there as `http.table.Route` entries (a whole sub-tree under a
prefix as an `http.table.Mount`); it is added here with one line. See
docs/architecture.md, "Add a route".
"""

from __future__ import annotations

from pathlib import Path

from aistack import console, images, vectors
from aistack.access.sessions import Sessions
from aistack.http import routes
from aistack.http.app import App
from aistack.http.table import Entry, Mount
from aistack.observability import Observability
from aistack.service import Gateway


def app(gateway: Gateway, obs: Observability | None = None, base_dir: Path | None = None) -> App:
    """What `aistack serve` serves on its port; `base_dir`: where the config's relative
    paths start."""
    return build(gateway, obs, base_dir)[0]


def build(
    gateway: Gateway, obs: Observability | None = None, base_dir: Path | None = None
) -> tuple[App, list[tuple[App, str, int]]]:
    """The main port's app, and the other listeners, (app, host, port) each: the vector
    store's own (`vectors.listen`)."""
    cfg = gateway.config
    entries: list[Entry] = routes.table(obs)
    listeners: list[tuple[App, str, int]] = []
    vs = vectors.service(gateway, base_dir)
    if vs is not None:
        entries += vectors.routes(vs)
        if obs is not None and obs.metrics is not None:
            vectors.metrics(vs, obs.metrics.registry)
        if cfg.vectors.listen:
            host, _, port = cfg.vectors.listen.rpartition(":")
            own = App(gateway, obs, [Mount("", vectors.api(vs), "qdrant")])
            listeners.append((own, host.strip("[]"), int(port)))
    sessions: Sessions | None = None
    if cfg.console.enabled:
        # The gate's sessions, in the store: every replica accepts them.
        sessions = gateway.gate.sessions if gateway.gate is not None else None
        entries += console.routes(gateway, sessions)
    entries += images.routes(gateway, sessions, obs)
    return App(gateway, obs, entries, sessions=sessions), listeners
