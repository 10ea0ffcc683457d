"""The house's rooms, put together: the app with the gateway's route table and every
room's entries. The one module that knows which rooms there are.

A room (console/ today; images/ and vectors/ next) keeps its code in its own package and
declares its routes there as `http.table.Route` entries (a whole sub-tree under a
prefix as an `http.table.Mount`); it is added here with one line. See
docs/architecture.md, "Add a route".
"""

from __future__ import annotations

from aistack import console
from aistack.access.sessions import Sessions, secret_for
from aistack.http import routes
from aistack.http.app import App
from aistack.http.table import Entry
from aistack.observability import Observability
from aistack.service import Gateway


def app(gateway: Gateway, obs: Observability | None = None) -> App:
    """What `aistack serve` serves."""
    cfg = gateway.config
    entries: list[Entry] = routes.table(obs)
    sessions: Sessions | None = None
    if cfg.console.enabled:
        secret = secret_for(cfg.console.session_secret, cfg.auth.master_key)
        sessions = Sessions(secret, cfg.console.session_hours * 3600)
        entries += console.routes(gateway, sessions)
    return App(gateway, obs, entries, sessions=sessions)
