"""The web console at /ui, a room of its own: pages (pages.py) and sign-in (signin.py).

Everything it shows comes from the admin API (http/admin_routes.py, admin_views.py),
which it calls with the session cookie as any script could with the master key; its
playground is an ordinary OpenAI chat call made as the signed-in user (see
http/auth.py). Read-only users (`auth.viewer_groups`) see every page; the server
refuses them every change. See docs/console.md.

Nothing here is on the API's request path: the console's routes are entries in the
app's table (aistack/rooms.py adds them), found only when a path is the console's.
"""

from __future__ import annotations

from string import Template

from aistack.access.sessions import Sessions
from aistack.console.pages import PAGES, Pages, load_static, read
from aistack.console.signin import PREFIX, SignIn
from aistack.http.table import GET, POST, PUBLIC, Route
from aistack.service import Gateway


def routes(gw: Gateway, sessions: Sessions | None) -> list[Route]:
    """The console's entries for the route table: pages, sign-in, static files. The
    pages check the session themselves (a visitor without one is sent to sign in)."""
    static, version = load_static()
    login = Template(read("templates/login.html").decode())
    signin = SignIn(gw, sessions, login, version)
    pages = Pages(signin, Template(read("templates/shell.html").decode()), static, version)
    out = [
        Route(GET, PREFIX, pages.page, "plain", PUBLIC, name="page"),
        Route(GET, f"{PREFIX}/login", signin.login_page, "plain", PUBLIC, name="login_page"),
        Route(POST, f"{PREFIX}/login", signin.login, "plain", PUBLIC, name="login"),
        Route(POST, f"{PREFIX}/logout", signin.logout, "plain", PUBLIC, name="logout"),
    ]
    out += [
        Route(GET, f"{PREFIX}/{name}", pages.page, "plain", PUBLIC, name="page")
        for name, _, _ in PAGES
    ]
    out += [
        Route(GET, f"{PREFIX}/static/{name}", pages.static_file, "plain", PUBLIC,
              name="static_file")
        for name in pages.static
    ]  # fmt: skip
    return out


__all__ = ["PAGES", "routes"]
