"""The console's Images page in a real browser (Playwright driving Debian's Chromium),
against a real gateway in front of a real ComfyUI (the tiny random checkpoint).

Sign in, generate an image and watch its sampler steps, see it in the gallery, open it
(its metadata), download it, save a preset and load it back, cancel a job from the
queue, delete the image; a read-only user sees the gallery and the key filter but
cannot generate. The page is saved as a screenshot like every other console page.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from playwright.sync_api import Browser, Page, expect

from tests import comfy
from tests.procs import Proc, running, start_gateway
from tests.test_console_browser import CHROMIUM, WIDE

MASTER = "sk-images-browser-0123456789"
MODEL = "tiny:latest"
WAIT = 240_000  # ms: a busy two-core machine makes sampler steps take seconds

pytestmark = pytest.mark.slow


@dataclass
class Site:
    gw: Proc
    shots: Path
    errors: list[str] = field(default_factory=list)

    @property
    def url(self) -> str:
        return self.gw.url


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    if not Path(CHROMIUM).exists():
        why = f"{CHROMIUM} is missing: `make test` installs Debian's chromium"
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
def site(tmp_path_factory: pytest.TempPathFactory, repo_root: Path) -> Iterator[Site]:
    tmp = tmp_path_factory.mktemp("images-browser")
    # A workflow file of our own: the tiny checkpoint at 64x64, three steps by default.
    graph = comfy.txt2img_graph(seed=1, steps=3, size=64)
    (tmp / "tiny.json").write_text(json.dumps(graph))
    shots = Path(os.environ.get("AISTACK_SCREENSHOTS") or repo_root / "build" / "screenshots")
    shots.mkdir(parents=True, exist_ok=True)
    with comfy.running(tmp / "comfy") as c:
        cfg = {
            "backends": [{"name": "comfy", "kind": "comfyui", "url": c.url,
                          "workflows": {"tiny": {"file": str(tmp / "tiny.json")}}}],
            "auth": {"master_key": MASTER, "trusted_proxies": ["127.0.0.1/32"],
                     "admin_groups": ["ai-admins"], "viewer_groups": ["ai-viewers"]},
        }  # fmt: skip
        with running(start_gateway(tmp, cfg)) as gw:
            yield Site(gw, shots)


@pytest.fixture(scope="module")
def page(browser: Browser, site: Site) -> Iterator[Page]:
    ctx = browser.new_context(viewport=WIDE, accept_downloads=True)
    pg = ctx.new_page()
    pg.on("pageerror", lambda e: site.errors.append(f"page error: {e}"))
    pg.on(
        "console",
        lambda m: site.errors.append(f"console {m.type}: {m.text}") if m.type == "error" else None,
    )
    pg.set_default_timeout(WAIT)
    pg.goto(f"{site.url}/ui/images")  # sent to sign in first, then back
    pg.get_by_label("Master key").fill(MASTER)
    pg.get_by_label("Master key").press("Enter")
    pg.wait_for_url("**/ui/images")
    yield pg
    ctx.close()
    assert site.errors == [], site.errors


def visit(pg: Page, site: Site) -> None:
    pg.goto(f"{site.url}/ui/images")
    pg.wait_for_selector("body[data-ready='1']")


def test_generate_watch_progress_see_it_in_the_gallery_and_delete_it(
    page: Page, site: Site, tmp_path: Path
) -> None:
    pg = page
    visit(pg, site)
    assert pg.get_by_label("Model", exact=True).input_value() == MODEL
    pg.get_by_label("Prompt", exact=True).fill("a red fox in the snow")
    pg.get_by_label("Steps").fill("4")
    pg.get_by_label("Seed").fill("1234")
    # Every progress text the page shows, as it shows it.
    pg.evaluate(
        """() => { window.__steps = [];
        new MutationObserver(() => document.querySelectorAll('#img-current .img-step')
            .forEach((e) => window.__steps.push(e.textContent))).observe(
            document.getElementById('img-current'),
            {subtree: true, characterData: true, childList: true}); }"""
    )
    pg.get_by_role("button", name="Generate").click()
    job = pg.locator(".img-job").first
    job.locator("button.thumb img").wait_for()
    expect(job.locator(".badge")).to_have_text("succeeded", timeout=WAIT)
    # Live progress from the job's events: the sampler's steps as they happened.
    steps = pg.evaluate("window.__steps")
    assert any(re.fullmatch(r"step \d of 4", t) for t in steps), steps
    # In the gallery, with its prompt and seed.
    shot = pg.locator(".gallery figure", has_text="a red fox in the snow").first
    shot.wait_for()
    assert "seed 1234" in shot.inner_text()
    assert pg.evaluate(
        "() => { const i = document.querySelector('.gallery img'); "
        "return i.complete && i.naturalWidth === 64 && i.naturalHeight === 64; }"
    )
    pg.evaluate("window.scrollTo(0, 0)")
    pg.screenshot(path=str(site.shots / "images.png"), full_page=True)
    # The full view: the image, its metadata, a download.
    shot.locator("button.thumb").click()
    dialog = pg.locator("#img-dialog")
    dialog.get_by_text("a red fox in the snow").first.wait_for()
    meta = dialog.locator("dl.meta").inner_text()
    assert "1234" in meta and MODEL in meta and "64x64" in meta
    with pg.expect_download() as dl:
        dialog.get_by_role("link", name="Download").click()
    path = tmp_path / "fox.png"
    dl.value.save_as(path)
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    # Delete it: gone from the gallery.
    before = pg.locator(".gallery figure").count()
    dialog.get_by_role("button", name="Delete").click()
    expect(pg.locator(".gallery figure")).to_have_count(before - 1, timeout=WAIT)


def test_a_preset_is_saved_and_loaded_back(page: Page, site: Site) -> None:
    pg = page
    visit(pg, site)
    pg.get_by_label("Prompt", exact=True).fill("a lighthouse, watercolor")
    pg.get_by_label("Steps").fill("2")
    pg.get_by_placeholder("Preset name").fill("watercolor")
    pg.get_by_role("button", name="Save as preset").click()
    expect(pg.get_by_label("Preset")).to_have_value(re.compile(r"^preset_"), timeout=WAIT)
    visit(pg, site)
    assert pg.get_by_label("Prompt", exact=True).input_value() == ""
    pg.get_by_label("Preset").select_option(label="watercolor")
    assert pg.get_by_label("Prompt", exact=True).input_value() == "a lighthouse, watercolor"
    assert pg.get_by_label("Steps").input_value() == "2"


def test_a_job_is_cancelled_from_the_queue(page: Page, site: Site) -> None:
    pg = page
    visit(pg, site)
    pg.get_by_label("Prompt", exact=True).fill("a very long job")
    pg.get_by_label("Steps").fill("150")
    pg.get_by_role("button", name="Generate").click()
    row = pg.locator("#img-queue tr", has_text="a very long job")
    row.wait_for()
    row.get_by_role("button", name="Cancel a very long job").click()
    badge = pg.locator(".img-job", has_text="a very long job").locator(".badge")
    expect(badge).to_have_text("cancelled", timeout=WAIT)
    expect(pg.locator("#img-queue")).to_contain_text("Nothing waiting or running.", timeout=WAIT)


def test_a_read_only_user_sees_the_gallery_but_cannot_generate(
    browser: Browser, site: Site
) -> None:
    ctx = browser.new_context(
        viewport=WIDE,
        extra_http_headers={"X-authentik-username": "vera", "X-authentik-groups": "ai-viewers"},
    )
    try:
        pg = ctx.new_page()
        visit(pg, site)
        assert "read-only" in pg.locator(".who").inner_text()
        assert pg.get_by_role("button", name="Generate").is_disabled()
        pg.get_by_label("Key").select_option("console")  # the key filter, for any viewer
        pg.locator(".gallery figure, #img-gallery p").first.wait_for()
        status = pg.evaluate(
            """async () => (await fetch('/v1/images/jobs', {method: 'POST',
              headers: {'X-Aistack-CSRF': document.querySelector('meta[name=aistack-csrf]').content,
                        'Content-Type': 'application/json'},
              body: JSON.stringify({prompt: 'sneaky'})})).status"""
        )
        assert status == 403
    finally:
        ctx.close()
