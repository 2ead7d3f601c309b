"""The signup path as a reader goes through it, in headless Chromium driven by Playwright (issue 14).

An operator's page on another origin embeds the box `digest subscribe-form` prints; the
reader fills it in, the confirmation email arrives (Maildir, and aiosmtpd with the SMTP
transport), they open its link and press the button, config.toml gains exactly them, the
next `digest send` delivers to them, and the preferences link in that digest changes their
sections. Playwright drives Debian's /usr/bin/chromium (no browser download); skipped
without it on a developer machine, failed under CI.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from email import message_from_bytes, policy
from email.message import EmailMessage
from pathlib import Path

import pytest
from conftest import MakeConfig
from feedserver import FeedServer
from smtp_fault import FaultySMTPServer
from test_web_signup import DAY1, cli, confirm_link, start, text_part

from digest import config as config_mod

CHROMIUM = shutil.which("chromium") or ("/usr/bin/chromium" if Path("/usr/bin/chromium").exists() else None)
ARGS = [
    "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking",
    "--disable-component-update", "--disable-sync", "--no-proxy-server",
    "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1",
]

pytestmark = pytest.mark.browser


@pytest.fixture(scope="module")
def browser() -> Iterator[object]:
    if CHROMIUM is None:
        if os.environ.get("CI"):
            pytest.fail("chromium is not installed, and CI must run the browser tests (apt-get install chromium)")
        pytest.skip("chromium is not installed (apt-get install chromium); CI runs this test")
    playwright_api = pytest.importorskip("playwright.sync_api")
    with playwright_api.sync_playwright() as driver:
        launched = driver.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        try:
            yield launched
        finally:
            launched.close()


def maildir_messages(config: Path) -> list[EmailMessage]:
    folder = config_mod.load(config).delivery.maildir / "new"
    files = sorted(folder.iterdir(), key=lambda f: f.stat().st_mtime) if folder.exists() else []
    return [message_from_bytes(f.read_bytes(), policy=policy.default) for f in files]  # type: ignore[misc]


@pytest.mark.parametrize("transport", ["maildir", "smtp"])
def test_embedded_box_to_confirmed_subscriber_to_digest_to_preferences(
    browser: object, make_config: MakeConfig, smtp_server: FaultySMTPServer, transport: str
) -> None:
    site = FeedServer()
    site.start()
    origin = f"http://127.0.0.1:{site.port}"
    config = make_config(smtp=smtp_server if transport == "smtp" else None, web={"embed_origins": [origin]})
    server, base = start(config)
    page = browser.new_page()  # type: ignore[attr-defined]
    try:
        code, box, _ = cli(config, "subscribe-form")
        assert code == 0 and f'action="{base}/subscribe"' in box
        operator_page = f"<!doctype html><html><head><title>Spacemagz</title></head><body><h1>Spacemagz</h1>{box}</body></html>"
        site.add("/", operator_page.encode(), headers={"Content-Type": "text/html; charset=utf-8"})

        def mails_to(email: str) -> list[EmailMessage]:
            if transport == "smtp":
                return [r.message for r in smtp_server.by_recipient().get(email, [])]
            return [m for m in maildir_messages(config) if email in str(m["To"])]

        page.goto(origin + "/")
        assert page.get_by_role("heading", name="Subscribe to Updates").is_visible()
        trap = page.locator('input[name="website"]').bounding_box()  # the honeypot: off screen, people never see it
        assert trap is not None and trap["x"] + trap["width"] <= 0
        page.get_by_label("Email address").fill("sally@example.org")
        page.get_by_role("button", name="Subscribe").click()
        page.wait_for_url(f"{base}/subscribe")
        assert page.get_by_role("heading", name="Check your inbox").is_visible()
        before = config.read_text()
        [confirmation] = mails_to("sally@example.org")
        link = confirm_link(confirmation)

        page.goto(link)
        assert page.get_by_role("heading", name="Confirm subscription").is_visible()
        assert config.read_text() == before  # opening the link changed nothing
        page.get_by_role("button", name="Confirm subscription").click()
        page.wait_for_url(f"{base}/confirm")
        assert page.get_by_role("heading", name="You're subscribed").is_visible(), page.content()
        assert config.read_text() == before + '\n[[subscribers]]\nemail = "sally@example.org"\n'

        sent = subprocess.run(  # its own process: Playwright's sync API holds this thread's event loop
            [sys.executable, "-m", "digest", "--config", str(config), "send", "--now", DAY1],
            capture_output=True, text=True, timeout=120, check=False,
        )
        assert sent.returncode == 0, sent.stderr
        assert "delivered to 4 of 4 subscribers" in sent.stdout, sent.stdout
        [digest] = [m for m in mails_to("sally@example.org") if m["List-Id"]]
        preferences = re.search(r"Preferences \(name, sections\): (\S+)", text_part(digest))
        assert preferences

        page.goto(preferences.group(1))
        assert page.get_by_role("heading", name="Your preferences").is_visible()
        page.get_by_label("Name").fill("Sally Ride")
        page.get_by_label("Launch").check()
        page.get_by_label("Military").check()
        page.get_by_role("button", name="Save").click()
        assert page.get_by_role("status").inner_text() == "Saved."
        assert page.get_by_label("Launch").is_checked() and not page.get_by_label("Politics").is_checked()
        assert config_mod.load(config).subscribers[-1] == config_mod.Subscriber(
            "sally@example.org", "Sally Ride", ("Launch", "Military")
        )
    finally:
        page.close()
        server.shutdown()
        server.server_close()
        site.stop()


def test_signup_page_fits_a_phone_and_shows_errors_next_to_the_field(
    browser: object, make_config: MakeConfig, tmp_path: Path
) -> None:
    config = make_config()
    server, base = start(config)
    page = browser.new_page(viewport={"width": 375, "height": 740})  # type: ignore[attr-defined]
    try:
        page.goto(base + "/subscribe")
        assert page.title() == "Subscribe: Orbit Daily"
        width = page.evaluate("document.documentElement.scrollWidth")
        assert width <= 375, width
        for section in ("Politics", "Launch", "Commercial", "Military"):
            assert page.get_by_label(section).is_visible()
        page.screenshot(path=str(tmp_path / "subscribe-375.png"), full_page=True)
        page.get_by_label("Email address").fill("a@b")  # the browser lets it through; the server does not
        page.get_by_label("Name").fill("Ada")
        page.get_by_label("Commercial").check()
        page.get_by_role("button", name="Subscribe").click()
        error = page.locator("#email-error")
        assert error.is_visible() and "email address" in error.inner_text()
        assert page.get_by_label("Email address").get_attribute("aria-describedby") == "email-error"
        assert page.get_by_label("Name").input_value() == "Ada" and page.get_by_label("Commercial").is_checked()
        assert page.evaluate("document.documentElement.scrollWidth") <= 375
        assert maildir_messages(config) == []
    finally:
        page.close()
        server.shutdown()
        server.server_close()
