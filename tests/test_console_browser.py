"""The web console in a real browser: Playwright driving Debian's Chromium.

Against a real gateway with the embedded model (generations of a few tokens) and a
stand-in Ollama model store for pulls: sign in, the embedded model shows healthy, the
playground streams an answer, a key made in the console works from the official
`openai` client, and that request shows in Requests and in Usage. Every page is saved
as a screenshot (1280 px wide, and phone width): to build/screenshots, or to
$AISTACK_SCREENSHOTS (`make screenshots` writes docs/screenshots).

Chromium comes from Debian (`make test` installs it); no browser is ever downloaded.
Without it these tests skip, saying why, except under CI=true, where that is a failure.
"""

from __future__ import annotations

import os
import re
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from playwright.sync_api import Browser, Page, expect

from tests.conftest import LOCAL_MODEL
from tests.fake_ollama import FakeOllama
from tests.procs import Proc, running, start_gateway

CHROMIUM = "/usr/bin/chromium"
MASTER = "sk-browser-master-0123456789"
WIDE = {"width": 1280, "height": 900}
PHONE = {"width": 390, "height": 844}
PROMPT = "Say hello in three words."

pytestmark = pytest.mark.slow


@dataclass
class Console:
    gw: Proc
    store: FakeOllama
    shots: Path
    errors: list[str] = field(default_factory=list)
    state: dict[str, str] = field(default_factory=dict)

    @property
    def url(self) -> str:
        return self.gw.url


def _screenshots_dir(repo_root: Path) -> Path:
    where = Path(os.environ.get("AISTACK_SCREENSHOTS") or repo_root / "build" / "screenshots")
    where.mkdir(parents=True, exist_ok=True)
    return where


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    if not Path(CHROMIUM).exists():
        why = (
            f"{CHROMIUM} is missing: `make test` installs Debian's chromium "
            "(apt-get install -y chromium)"
        )
        if os.environ.get("CI") == "true":
            pytest.fail(why)
        pytest.skip(why)
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(
            executable_path=CHROMIUM,
            args=["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"],
        )
        try:
            yield b
        finally:
            b.close()


@pytest.fixture(scope="module")
def console(tmp_path_factory: pytest.TempPathFactory, repo_root: Path) -> Iterator[Console]:
    tmp = tmp_path_factory.mktemp("console-browser")
    store = FakeOllama(delay=0.02)
    store.add("llama3.2:1b", 1_300_000_000, family="llama", quantization="Q8_0")
    store.loaded.add("llama3.2:1b")
    store.registry.update({"qwen3:4b": 2_500_000_000})
    store.start()
    cfg = {
        "backends": [
            {"name": "local", "kind": "local", "n_threads": 1},
            {"name": "box", "kind": "ollama", "url": store.url,
             "models": ["llama3.2:1b", "qwen3:4b"]},
        ],
        "auth": {
            "master_key": MASTER,
            "trusted_proxies": ["127.0.0.1/32"],
            "admin_groups": ["ai-admins"],
            "viewer_groups": ["ai-viewers"],
        },
        # Prompts and answers kept, so the request detail shows them.
        "tracing": {"capture_content": True},
        "routing": {"health": {"interval": 2}},
    }  # fmt: skip
    try:
        with running(start_gateway(tmp, cfg)) as gw:
            yield Console(gw, store, _screenshots_dir(repo_root))
    finally:
        store.stop()


@pytest.fixture(scope="module")
def page(browser: Browser, console: Console) -> Iterator[Page]:
    ctx = browser.new_context(viewport=WIDE, accept_downloads=True)
    pg = ctx.new_page()
    pg.on("pageerror", lambda e: console.errors.append(f"page error: {e}"))
    pg.on(
        "console",
        lambda m: (
            console.errors.append(f"console {m.type}: {m.text}") if m.type == "error" else None
        ),
    )
    pg.set_default_timeout(30_000)
    yield pg
    ctx.close()
    assert console.errors == [], console.errors


def visit(pg: Page, console: Console, name: str) -> None:
    pg.goto(f"{console.url}/ui/{name}")
    pg.wait_for_selector("body[data-ready='1']")


def shot(pg: Page, console: Console, name: str) -> None:
    pg.evaluate("window.scrollTo(0, 0)")  # the sticky header where it belongs
    pg.screenshot(path=str(console.shots / f"{name}.png"), full_page=True)


def test_sign_in_with_the_master_key(page: Page, console: Console) -> None:
    pg = page
    pg.goto(f"{console.url}/ui/overview")
    assert "/ui/login" in pg.url
    shot(pg, console, "login")
    pg.get_by_label("Master key").fill("sk-wrong-key-0000000000")
    pg.get_by_role("button", name="Sign in").click()
    assert pg.get_by_role("alert").inner_text() == "That is not the master key or the admin key."
    console.errors.clear()  # the browser logs that 401: it was the point
    pg.get_by_label("Master key").fill(MASTER)
    pg.get_by_label("Master key").press("Enter")
    pg.wait_for_url("**/ui/overview")
    cookies = pg.context.cookies()
    session = next(c for c in cookies if c["name"] == "aistack_console")
    assert session["httpOnly"] is True and session["sameSite"] == "Strict"
    assert MASTER not in session["value"]
    assert MASTER not in pg.content()


def test_overview_shows_the_embedded_model_healthy(page: Page, console: Console) -> None:
    pg = page
    visit(pg, console, "overview")
    local = pg.locator("section.backend[data-backend='local']")
    local.get_by_text("up", exact=True).wait_for()
    # Loaded, once the engine has read the model (the page updates itself every 5 s).
    local.locator(".mono", has_text=LOCAL_MODEL).wait_for()
    row = pg.locator("tr", has_text=LOCAL_MODEL).first
    assert row.locator(".badge").inner_text() == "ok"
    shot(pg, console, "overview")


def test_playground_streams_an_answer(page: Page, console: Console) -> None:
    pg = page
    visit(pg, console, "playground")
    pg.get_by_label("Model 1").select_option(LOCAL_MODEL)
    pg.get_by_label("Max tokens").fill("8")
    pg.get_by_label("Prompt").fill(PROMPT)
    # Watch the answer grow: several updates before the stream ends.
    pg.evaluate(
        """() => { window.__updates = 0;
        new MutationObserver(() => window.__updates++).observe(
            document.getElementById('messages-0'),
            {subtree: true, characterData: true, childList: true}); }"""
    )
    pg.get_by_role("button", name="Send").click()
    meter = pg.locator("#meter-0 .tps")
    meter.wait_for()
    assert re.fullmatch(r"\d+(\.\d)? tokens/s", meter.inner_text())
    assert re.fullmatch(r"TTFT \d+ ms|TTFT \d+\.\d s", pg.locator("#meter-0 .ttft").inner_text())
    answer = pg.locator("#messages-0 .answer").inner_text()
    assert answer.strip()
    assert pg.evaluate("window.__updates") > 3
    # Two models side by side on one prompt (the embedded model twice, on one thread).
    pg.get_by_label("Compare two models side by side").check()
    pg.get_by_label("Model 2").select_option(LOCAL_MODEL)
    pg.get_by_label("Max tokens").fill("5")
    pg.get_by_label("Prompt").fill("And in French?")
    pg.get_by_role("button", name="Send").click()
    pg.locator("#meter-1 .tps").wait_for()
    pg.locator("#meter-0 .tps").wait_for()
    assert pg.locator("#messages-1 .answer").inner_text().strip()
    shot(pg, console, "playground")


def test_a_key_created_in_the_console_works_from_the_openai_client(
    page: Page, console: Console
) -> None:
    pg = page
    visit(pg, console, "keys")
    pg.get_by_label("App name").fill("browser-app")
    pg.get_by_label("Requests / min").fill("60")
    pg.get_by_label("Images / min").fill("4")
    pg.get_by_role("button", name="Create key").click()
    key = pg.locator("#new-key").inner_text().strip()
    assert key.startswith("sk-aistack-")
    shot(pg, console, "keys-created")
    row = pg.locator("tr[data-key='browser-app']")
    assert "never" in row.locator(".last-used").inner_text()
    assert row.locator(".limits").inner_text() == "60 rpm, 4 images/min"
    # The limit is the key's, in the store (the admin API reads it back).
    listed = pg.evaluate("async () => (await (await fetch('/admin/api/keys')).json()).keys")
    mine = next(k for k in listed if k["name"] == "browser-app")
    assert (mine["rpm"], mine["images_per_minute"]) == (60, 4)

    from openai import OpenAI

    with OpenAI(base_url=f"{console.url}/v1", api_key=key) as client:
        r = client.chat.completions.create(
            model=LOCAL_MODEL, messages=[{"role": "user", "content": "Hi there"}], max_tokens=6
        )
    assert r.choices[0].message.content is not None
    console.state["key"] = key

    # Shown once: a reload lists it by its hint only, and says when it was last used.
    visit(pg, console, "keys")
    assert key not in pg.content()
    row = pg.locator("tr[data-key='browser-app']")
    assert row.locator(".last-used").inner_text() == "just now"
    shot(pg, console, "keys")


def test_that_request_appears_in_requests(page: Page, console: Console) -> None:
    pg = page
    visit(pg, console, "requests")
    pg.get_by_label("App", exact=True).select_option("browser-app")
    rows = pg.locator("#request-list tbody tr")
    # Until the filtered list arrives the page may still show every app's requests.
    expect(rows).to_have_count(1, timeout=30_000)
    assert LOCAL_MODEL in rows.first.inner_text()
    rows.first.focus()
    pg.keyboard.press("Enter")
    detail = pg.locator("#request-detail")
    detail.get_by_text("Hi there").wait_for()  # the prompt: content capture is on
    assert "browser-app" in detail.inner_text()
    # The playground's requests are there too, as app `console`.
    pg.get_by_label("App", exact=True).select_option("console")
    pg.locator("#request-list tbody tr", has_text="console").first.wait_for()
    pg.locator("#request-list tbody tr").first.click()
    detail.get_by_text("And in French?").wait_for()
    shot(pg, console, "requests")


def test_that_request_appears_in_usage(page: Page, console: Console, tmp_path: Path) -> None:
    pg = page
    visit(pg, console, "usage")
    out = pg.locator("#usage-out")
    out.locator("svg.chart").first.wait_for()
    text = out.inner_text()
    assert "browser-app" in text and "console" in text
    assert out.locator("svg.chart rect").count() >= 1
    shot(pg, console, "usage")
    with pg.expect_download() as dl:
        pg.get_by_role("link", name="Export CSV").click()
    path = tmp_path / "usage.csv"
    dl.value.save_as(path)
    lines = path.read_text().splitlines()
    assert lines[0].startswith("day,key,app,requests")
    assert any(",browser-app," in line for line in lines[1:])


def test_models_page_pulls_with_progress_and_plans_a_sync(page: Page, console: Console) -> None:
    pg = page
    visit(pg, console, "models")
    pg.locator("tr", has_text="llama3.2:1b").first.wait_for()
    pg.get_by_role("button", name="Show the plan").click()
    plan = pg.locator("#sync-plan")
    plan.get_by_text("qwen3:4b").wait_for()
    assert "pull" in plan.inner_text()
    pg.get_by_label("Model to pull").fill("qwen3:4b")
    pg.get_by_role("button", name="Pull", exact=True).click()
    status = pg.locator("#pull-status")
    status.get_by_text("Pulled qwen3:4b on box.").wait_for()
    assert pg.locator("#pull-status [role=progressbar]").get_attribute("aria-valuenow") == "100"
    assert ("qwen3:4b", 0) in console.store.pulls
    pg.get_by_role("button", name="Show the plan").click()
    pg.get_by_text("Nothing to sync").or_(plan.get_by_text("keep").first).first.wait_for()
    shot(pg, console, "models")
    # Unload and Load, through the gateway (which knows what runs where).
    pg.get_by_role("button", name="Unload llama3.2:1b from box").click()
    pg.get_by_role("button", name="Load llama3.2:1b on box").wait_for()
    assert "llama3.2:1b" not in console.store.loaded
    pg.get_by_role("button", name="Load llama3.2:1b on box").click()
    pg.get_by_role("button", name="Unload llama3.2:1b from box").wait_for()
    assert "llama3.2:1b" in console.store.loaded
    # Delete asks first, then goes to the backend that has the model.
    pg.once("dialog", lambda d: d.accept())
    pg.get_by_role("button", name="Delete llama3.2:1b from box").click()
    row = pg.locator("tr", has_text="llama3.2:1b").first
    row.get_by_text("missing").wait_for()  # still declared in the config, gone from the box
    assert ("DELETE", "/api/delete", {"model": "llama3.2:1b"}) in console.store.requests


def test_connect_page_shows_snippets_with_a_copy_button(page: Page, console: Console) -> None:
    pg = page
    visit(pg, console, "connect")
    pg.get_by_label("App", exact=True).select_option("open-webui")
    env = pg.locator("#snippet-env")
    env.get_by_text("OPENAI_API_BASE_URL").wait_for()
    assert f"{console.url}/v1" in env.inner_text()
    assert pg.get_by_role(
        "button", name="Copy .env (docker compose env_file, systemd EnvironmentFile)"
    ).is_visible()
    shot(pg, console, "connect")


def test_pages_at_phone_width(browser: Browser, page: Page, console: Console) -> None:
    ctx = browser.new_context(viewport=PHONE, storage_state=page.context.storage_state())
    try:
        pg = ctx.new_page()
        pg.on("pageerror", lambda e: console.errors.append(f"page error: {e}"))
        for name in ("overview", "playground", "usage"):
            visit(pg, console, name)
            wide = pg.evaluate("document.documentElement.scrollWidth")
            assert wide <= PHONE["width"] + 1, f"{name} scrolls sideways at phone width"
            shot(pg, console, f"{name}-phone")
        nav = pg.locator("#nav")
        assert not nav.is_visible()
        pg.get_by_role("button", name="Menu").click()
        assert nav.get_by_role("link", name="Keys").is_visible()
    finally:
        ctx.close()


def test_a_read_only_user_sees_pages_but_cannot_change(browser: Browser, console: Console) -> None:
    ctx = browser.new_context(
        viewport=WIDE,
        extra_http_headers={"X-authentik-username": "victor", "X-authentik-groups": "ai-viewers"},
    )
    try:
        pg = ctx.new_page()
        visit(pg, console, "keys")
        assert "read-only" in pg.locator(".who").inner_text()
        assert pg.get_by_role("button", name="Create key").is_disabled()
        assert "browser-app" in pg.locator("#page").inner_text()
        # The server refuses, whatever the page shows: a change sent by hand.
        status = pg.evaluate(
            """async () => (await fetch('/admin/api/keys', {method: 'POST',
              headers: {'X-Aistack-CSRF': document.querySelector('meta[name=aistack-csrf]').content,
                        'Content-Type': 'application/json'},
              body: JSON.stringify({name: 'sneaky'})})).status"""
        )
        assert status == 403
        visit(pg, console, "models")
        assert pg.get_by_role("button", name="Pull", exact=True).is_disabled()
        shot(pg, console, "models-read-only")
    finally:
        ctx.close()


def test_vectors_page_lists_collections_per_app_and_searches_by_text(
    page: Page, console: Console
) -> None:
    import warnings

    from qdrant_client import QdrantClient
    from qdrant_client import models as m

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # an api key over plain http, on loopback
        c = QdrantClient(
            url=console.url, prefix="qdrant", api_key=MASTER, check_compatibility=False,
            cloud_inference=True, timeout=120,
        )  # fmt: skip
    docs = ["Lighthouses guide ships at night.", "Bread rises with yeast."]
    import ollama

    auth = {"authorization": f"Bearer {MASTER}"}
    # The model's vector size, from one embedding through the gateway.
    dim = len(ollama.Client(host=console.url, headers=auth).embed(LOCAL_MODEL, "x").embeddings[0])
    c.create_collection(
        "notes", vectors_config=m.VectorParams(size=dim, distance=m.Distance.COSINE)
    )
    c.upsert(
        "notes",
        [m.PointStruct(id=i, vector=m.Document(text=t, model=LOCAL_MODEL), payload={"t": t})
         for i, t in enumerate(docs)],
    )  # fmt: skip
    pg = page
    visit(pg, console, "vectors")
    row = pg.locator("tr[data-collection='notes']")
    assert row.locator("td").nth(2).inner_text() == "2"
    pg.get_by_label("Collection").select_option("notes")
    pg.get_by_label("Model").fill(LOCAL_MODEL)
    pg.get_by_label("Text").fill(docs[1])
    pg.get_by_role("button", name="Search").click()
    first = pg.locator("#vector-results tbody tr").first
    first.wait_for()
    assert docs[1] in first.inner_text()
    shot(pg, console, "vectors")


def test_screenshots_cover_every_page(console: Console) -> None:
    from aistack.console import PAGES

    names = {p.stem for p in console.shots.glob("*.png")}
    # The Images page needs a real ComfyUI: test_images_browser.py shoots it.
    for name, _, _ in PAGES:
        assert name in names or name == "images", f"no screenshot of {name}"
    assert {"login", "overview-phone"} <= names


def test_a_first_run_signs_in_with_the_printed_link(
    browser: Browser, console: Console, tmp_path_factory: pytest.TempPathFactory
) -> None:
    """A fresh data directory, `aistack serve` with no master key: the link it prints
    opens the console, signed in as the admin, once."""
    tmp = tmp_path_factory.mktemp("first-run")
    cfg = {"backends": [{"name": "box", "kind": "ollama", "url": console.store.url}]}
    with running(start_gateway(tmp, cfg, name="first")) as gw:
        link = ""
        deadline = time.monotonic() + 30
        while not link:
            m = re.search(r"console: sign in at (http://\S+/ui/login\?link=\S+)", gw.output())
            link = m.group(1) if m else ""
            assert link or time.monotonic() < deadline, gw.output()[-2000:]
            time.sleep(0.05)
        assert (tmp / "first" / "data" / "aistack" / "admin.key").is_file()
        ctx = browser.new_context(viewport=WIDE)
        try:
            pg = ctx.new_page()
            pg.goto(link)
            pg.wait_for_url(f"{gw.url}/ui")
            pg.wait_for_selector("body[data-ready='1']")
            assert "admin" in pg.locator(".who").inner_text()
            assert link.split("link=")[1] not in pg.url
            # The Keys page works: the first key can be made from here.
            pg.goto(f"{gw.url}/ui/keys")
            pg.wait_for_selector("body[data-ready='1']")
            assert pg.get_by_role("button", name="Create key").is_enabled()
            # Used: opened again (another browser), it signs nobody in.
            other = browser.new_context(viewport=WIDE)
            try:
                again = other.new_page()
                again.goto(link)
                assert "used already" in again.get_by_role("alert").inner_text()
                assert not [c for c in other.cookies() if c["name"] == "aistack_console"]
            finally:
                other.close()
        finally:
            ctx.close()
