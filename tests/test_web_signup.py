"""Public signup over HTTP against the real server (issue 14): subscribe, confirm, preferences.

Every test runs the Starlette app on uvicorn on 127.0.0.1:0, with the config's base_url
pointed at it, and reads the emails from the Maildir (or aiosmtpd) they really went to.
"""

from __future__ import annotations

import glob
import os
import re
import socket
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from email import message_from_bytes, policy
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import httpx
import pytest
from click.testing import CliRunner
from conftest import MakeConfig
from smtp_fault import FaultySMTPServer

from digest import config as config_mod
from digest import mail, web
from digest.cli import main
from digest.signup_store import SignupBook
from digest.store import Store
from digest.web import signup
from digest.web.server import Running

DAY1 = "2026-11-21T07:00:00+00:00"


@dataclass
class Site:
    config: Path
    base: str
    client: httpx.Client

    def get(self, path: str, **kw: Any) -> httpx.Response:
        return self.client.get(self.base + path, **kw)

    def post(self, path: str, data: dict[str, Any] | None = None, origin: str | None = "", **kw: Any) -> httpx.Response:
        headers = dict(kw.pop("headers", {}))
        if origin is not None:
            headers.setdefault("Origin", origin or self.base)
        return self.client.post(self.base + path, data=data, headers=headers, **kw)

    def subscribe(self, email: str, headers: dict[str, str] | None = None, **fields: Any) -> httpx.Response:
        return self.post("/subscribe", {"email": email, **fields}, headers=headers or {})

    def maildir(self) -> Path:
        return config_mod.load(self.config).delivery.maildir / "new"

    def mails(self) -> list[EmailMessage]:
        files = sorted(glob.glob(str(self.maildir() / "*")), key=os.path.getmtime)
        return [message_from_bytes(Path(f).read_bytes(), policy=policy.default) for f in files]  # type: ignore[misc]

    def mails_to(self, email: str) -> list[EmailMessage]:
        return [m for m in self.mails() if email in str(m["To"])]

    def secret(self) -> bytes:
        with Store(config_mod.load(self.config).state_path) as store:
            return store.secret()


def start(config: Path, base_path: str = "") -> tuple[Running, str]:
    """The server on a free port, and config.toml's base_url pointed at it."""
    server, _ = web.start_server(config, "127.0.0.1:0")
    base = f"http://127.0.0.1:{server.server_address[1]}{base_path}"
    text = config.read_text()
    config.write_text(text.replace('base_url = "https://news.example.com"', f'base_url = "{base}"'))
    return server, base


@pytest.fixture
def site(make_config: MakeConfig) -> Iterator[Site]:
    config = make_config(schedule={"send_if_empty": True})
    server, base = start(config)
    try:
        with httpx.Client(timeout=20) as client:
            yield Site(config, base, client)
    finally:
        server.shutdown()
        server.server_close()


def text_part(message: EmailMessage) -> str:
    return str(message.get_body(("plain",)).get_content())  # type: ignore[union-attr]


def html_part(message: EmailMessage) -> str:
    return str(message.get_body(("html",)).get_content())  # type: ignore[union-attr]


def confirm_link(message: EmailMessage) -> str:
    found = re.search(r"(http://\S+/confirm\?token=[\w.-]+)", text_part(message))
    assert found, text_part(message)
    assert found.group(1).replace("&", "&amp;") in html_part(message)  # both parts
    return found.group(1)


def token_of(link: str) -> str:
    return link.partition("token=")[2]


def signup_rows(config: Path) -> list[tuple[Any, ...]]:
    db = sqlite3.connect(config_mod.load(config).state_path)
    try:
        return db.execute("SELECT email, name, topics, source, client, confirmed FROM signups").fetchall()
    except sqlite3.OperationalError:
        return []
    finally:
        db.close()


def cli(config: Path, *args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(main, ["--config", str(config), *args], catch_exceptions=False)
    return result.exit_code, result.stdout, result.stderr


# --------------------------------------------------------------------------- the whole path


def test_signup_confirm_send_and_preferences(site: Site) -> None:
    page = site.get("/subscribe")
    assert page.status_code == 200
    assert "Orbit Daily" in page.text and "Subscribe to Updates" in page.text
    for section in ("Politics", "Launch", "Commercial", "Military"):
        assert f'name="topics" value="{section}"' in page.text
    assert re.search(r'<label for="email">', page.text) and 'name="website"' in page.text
    assert page.headers["x-frame-options"] == "DENY" and "frame-ancestors 'none'" in page.headers["content-security-policy"]
    before = site.config.read_text()

    answer = site.subscribe("mae@example.net", name="Mae Jemison", topics=["Launch", "Military"])
    assert answer.status_code == 200 and "Check your inbox" in answer.text
    assert site.config.read_text() == before  # nothing reaches config.toml before confirmation
    [confirmation] = site.mails_to("mae@example.net")
    assert "Confirm" in str(confirmation["Subject"]) and confirmation["Auto-Submitted"] == "auto-generated"
    link = confirm_link(confirmation)
    assert link.startswith(site.base + "/confirm?token=")
    [(email, name, topics, source, client, confirmed)] = signup_rows(site.config)
    assert (email, name, topics, confirmed) == ("mae@example.net", "Mae Jemison", '["Launch", "Military"]', None)
    assert source == site.base and re.fullmatch(r"[0-9a-f]{24}", client)  # a hash, never the address

    shown = site.get(link.removeprefix(site.base))
    assert shown.status_code == 200 and "Confirm subscription" in shown.text and 'method="post"' in shown.text
    assert site.config.read_text() == before  # GET changes nothing

    done = site.post("/confirm", {"token": token_of(link)})
    assert done.status_code == 200 and "subscribed" in done.text
    after = site.config.read_text()
    added = '\n[[subscribers]]\nemail = "mae@example.net"\nname = "Mae Jemison"\ntopics = ["Launch", "Military"]\n'
    assert after == before + added  # exactly that subscriber, every other byte kept
    welcome = site.mails_to("mae@example.net")[-1]
    assert str(welcome["Subject"]).startswith("Welcome") and "/preferences?email=mae%40example.net" in text_part(welcome)

    code, out, err = cli(site.config, "send", "--now", DAY1)
    assert code == 0, err
    digest = [m for m in site.mails_to("mae@example.net") if m["List-Id"]]
    assert len(digest) == 1
    body = text_part(digest[0])
    assert "LAUNCH" in body and "POLITICS" not in body  # their sections only
    prefs = re.search(r"Preferences \(name, sections\): (\S+)", body)
    assert prefs and prefs.group(1).startswith(site.base + "/preferences?")
    assert 'class="footer-link"' in html_part(digest[0]) and ">Preferences</a>" in html_part(digest[0])

    form = site.get(prefs.group(1).removeprefix(site.base))
    assert form.status_code == 200 and 'value="Launch" checked' in form.text and 'value="Politics">' in form.text
    saved = site.post(
        "/preferences",
        {"email": "mae@example.net", "token": token_of(prefs.group(1)), "name": "Mae", "topics": ["Politics"], "action": "save"},
    )
    assert saved.status_code == 200 and "Saved." in saved.text
    assert config_mod.load(site.config).subscribers[-1] == config_mod.Subscriber("mae@example.net", "Mae", ("Politics",))
    assert site.config.read_text() == before + added.replace('"Mae Jemison"', '"Mae"').replace(
        '["Launch", "Military"]', '["Politics"]'
    )
    code, out, _ = cli(site.config, "subscribers", "list")
    assert re.search(r"mae@example.net: confirmed \d{4}-\d\d-\d\d \d\d:\d\d UTC from http://127", out), out
    code, out, _ = cli(site.config, "status")
    assert "Signups (last 7 days): 1 confirmed, 0 pending" in out

    gone = site.post("/preferences", {"email": "mae@example.net", "token": token_of(prefs.group(1)), "action": "unsubscribe"})
    assert gone.status_code == 200 and "Unsubscribed" in gone.text
    with Store(config_mod.load(site.config).state_path) as store:
        assert "mae@example.net" in store.suppressed()


def test_the_answer_is_the_same_for_new_pending_subscribed_and_unsubscribed(site: Site) -> None:
    with Store(config_mod.load(site.config).state_path) as store:
        store.suppress("valentina@example.org", datetime.now(UTC), "one-click")
    site.subscribe("pending@example.com")
    config = config_mod.load(site.config)
    with Store(config.state_path) as store:  # let "pending" sign up again without the per-address wait
        store.db.execute("UPDATE signups SET created='2000-01-01T00:00:00+00:00'")
    pages = {}
    for email in ("brand-new@example.com", "pending@example.com", "ada@example.com", "valentina@example.org"):
        answer = site.subscribe(email)
        pages[email] = (answer.status_code, answer.text.replace(email, "EMAIL"))
    assert len(set(pages.values())) == 1, pages
    assert "Check your inbox" in next(iter(pages.values()))[1]
    already = site.mails_to("ada@example.com")[-1]
    assert "already subscribed" in str(already["Subject"]) and "/preferences?email=ada%40example.com" in text_part(already)
    assert "/confirm?token=" in text_part(site.mails_to("valentina@example.org")[-1])


# --------------------------------------------------------------------------- refusals


def test_an_invalid_address_is_shown_next_to_the_field_and_nothing_is_sent(site: Site) -> None:
    for bad in ("not-an-address", "a@b", "ada@@example.com", "x" * 400 + "@example.com", ""):
        answer = site.subscribe(bad, name="Ada", topics=["Launch"])
        assert answer.status_code == 400, bad
        assert 'id="email-error"' in answer.text and 'aria-describedby="email-error"' in answer.text
        assert 'value="Launch" checked' in answer.text and 'value="Ada"' in answer.text  # kept for the retry
    bad_topic = site.subscribe("ok@example.com", topics=["Astrology"])
    assert bad_topic.status_code == 400 and 'id="topics-error"' in bad_topic.text
    assert not site.maildir().exists() or not list(site.maildir().iterdir())
    assert signup_rows(site.config) == []


def test_the_honeypot_gets_the_same_page_and_no_email(site: Site) -> None:
    answer = site.subscribe("bot@example.com", website="http://spam.example")
    assert answer.status_code == 200 and "Check your inbox" in answer.text
    assert signup_rows(site.config) == [] and not site.maildir().exists()


def test_limits_per_client_and_per_address(site: Site) -> None:
    codes = [site.subscribe(f"reader{i}@example.com").status_code for i in range(8)]
    assert codes == [200] * 5 + [429] * 3
    assert len(site.mails()) == 5
    other = site.subscribe("reader9@example.com", headers={"X-Forwarded-For": "203.0.113.9"})  # another client
    assert other.status_code == 200 and len(site.mails()) == 6
    again = site.subscribe("reader9@example.com", headers={"X-Forwarded-For": "203.0.113.10"})
    assert again.status_code == 429 and "a few minutes ago" in again.text  # one confirmation per 10 minutes
    assert len(site.mails()) == 6


def test_origin_form_token_body_cap_and_methods(site: Site, make_config: MakeConfig) -> None:
    foreign = site.post("/subscribe", {"email": "x@example.com"}, origin="https://evil.example")
    assert foreign.status_code == 403
    bare = site.post("/subscribe", {"email": "x@example.com"}, origin=None)
    assert bare.status_code == 403  # no Origin, no Referer, no form token
    token = re.search(r'name="form_token" value="([^"]+)"', site.get("/subscribe").text)
    assert token
    ok = site.post("/subscribe", {"email": "x@example.com", "form_token": token.group(1)}, origin=None)
    assert ok.status_code == 200
    forged = site.post("/subscribe", {"email": "y@example.com", "form_token": "1.00"}, origin=None)
    assert forged.status_code == 403
    huge = site.post("/subscribe", {"email": "z@example.com", "name": "n" * 20000})
    assert huge.status_code == 413

    def chunked() -> Iterator[bytes]:  # no Content-Length: the cap counts what arrives
        yield b"email=z%40example.com&name="
        for _ in range(40):
            yield b"n" * 1000

    form = {"Content-Type": "application/x-www-form-urlencoded", "Origin": site.base}
    assert site.client.post(site.base + "/subscribe", content=chunked(), headers=form).status_code == 413
    assert site.client.post(site.base + "/unsubscribe?email=a%40b.example&token=x", content=chunked(), headers=form).status_code == 413
    json_body = site.client.post(site.base + "/subscribe", json={"email": "z@example.com"}, headers={"Origin": site.base})
    assert json_body.status_code == 415
    assert site.client.put(site.base + "/subscribe").status_code == 405
    assert site.post("/confirm", {"token": "1.abcdefgh.1.0"}, origin="https://evil.example").status_code == 403
    assert len(site.mails()) == 1


def test_embed_origins_may_post_and_frame_the_box(site: Site) -> None:
    text = site.config.read_text().replace("[delivery]", '[web]\nembed_origins = ["https://www.orbitdaily.example"]\n\n[delivery]')
    site.config.write_text(text)
    box = site.get("/subscribe/embed")
    assert box.status_code == 200 and f'action="{site.base}/subscribe"' in box.text and "Subscribe to Updates" in box.text
    assert "frame-ancestors 'self' https://www.orbitdaily.example" in box.headers["content-security-policy"]
    assert "x-frame-options" not in box.headers
    answer = site.post("/subscribe", {"email": "embedded@example.com"}, origin="https://www.orbitdaily.example")
    assert answer.status_code == 200 and len(site.mails()) == 1
    code, out, _ = cli(site.config, "subscribe-form")
    assert code == 0 and f'action="{site.base}/subscribe"' in out and 'name="website"' in out


# --------------------------------------------------------------------------- tokens


def test_expired_forged_and_replayed_confirm_tokens(site: Site) -> None:
    site.subscribe("late@example.com")
    link = confirm_link(site.mails_to("late@example.com")[-1])
    secret = site.secret()
    config = config_mod.load(site.config)
    with Store(config.state_path) as store:
        pending = SignupBook(store).get(1)
    assert pending is not None
    old = signup.confirm_token(secret, pending, datetime.now(UTC) - timedelta(days=7, minutes=1))
    assert site.get(f"/confirm?token={old}").status_code == 410
    assert site.post("/confirm", {"token": old}).status_code == 410
    good = token_of(link)
    forged = [
        good[:-1] + ("0" if good[-1] != "0" else "1"),  # one character of the MAC
        good.replace(f"{pending.id}.", f"{pending.id + 1}.", 1),  # another signup's id
        signup.confirm_token(b"guessed-key", pending, datetime.now(UTC)),
        mail.preferences_token(secret, "late@example.com"),  # another purpose's token
        mail.unsubscribe_token(secret, "late@example.com"),
        "",
        "%00",
    ]
    for token in forged:
        assert site.post("/confirm", {"token": token}).status_code == 400, token
        assert site.get(f"/confirm?token={token}").status_code == 400
    before = site.config.read_text()
    assert before == config.path.read_text() and "late@example.com" not in before

    assert site.post("/confirm", {"token": good}).status_code == 200
    assert site.config.read_text().count("late@example.com") == 1
    assert len(site.mails_to("late@example.com")) == 2  # confirmation + welcome
    with Store(config.state_path) as store:
        store.suppress("late@example.com", datetime.now(UTC), "one-click")  # they leave later
    replay = site.post("/confirm", {"token": good})
    assert replay.status_code == 200 and "Already confirmed" in replay.text
    with Store(config.state_path) as store:
        assert "late@example.com" in store.suppressed()  # a replayed link does not bring them back
    assert len(site.mails_to("late@example.com")) == 2


def test_get_and_head_never_subscribe(site: Site) -> None:
    site.subscribe("scanner@example.com")
    link = confirm_link(site.mails_to("scanner@example.com")[-1])
    before = site.config.read_text()
    for _ in range(3):
        assert site.get(link.removeprefix(site.base)).status_code == 200
        assert site.client.head(link).status_code == 200
        assert site.get(f"/subscribe?email=scanner%40example.com&token={token_of(link)}").status_code == 200
    assert site.config.read_text() == before
    assert [row[5] for row in signup_rows(site.config)] == [None]


def test_preferences_links_are_signed_per_subscriber(site: Site) -> None:
    secret = site.secret()
    good = mail.preferences_token(secret, "yuri@example.com")
    assert site.get(f"/preferences?email=yuri%40example.com&token={good}").status_code == 200
    for email, token in [
        ("yuri@example.com", "0" * 32),
        ("ada@example.com", good),  # Yuri's token for Ada
        ("yuri@example.com", mail.unsubscribe_token(secret, "yuri@example.com")),
    ]:
        assert site.get("/preferences", params={"email": email, "token": token}).status_code == 403
        changed = site.post("/preferences", {"email": email, "token": token, "topics": ["Politics"], "action": "save"})
        assert changed.status_code == 403
    assert config_mod.load(site.config).subscribers[1].topics == ("Launch", "Commercial")


def test_unsubscribed_then_confirmed_lifts_the_unsubscribe(site: Site) -> None:
    secret = site.secret()
    one_click = mail.unsubscribe_token(secret, "yuri@example.com")
    assert site.post(f"/unsubscribe?email=yuri%40example.com&token={one_click}", origin=None).status_code == 200
    config = config_mod.load(site.config)
    with Store(config.state_path) as store:
        assert store.suppressed() == {"yuri@example.com"}
    site.subscribe("yuri@example.com", name="Yuri", topics=["Launch"])
    link = confirm_link(site.mails_to("yuri@example.com")[-1])
    assert site.post("/confirm", {"token": token_of(link)}).status_code == 200
    with Store(config.state_path) as store:
        assert store.suppressed() == set()
    after = config_mod.load(site.config)
    assert [s for s in after.subscribers if s.email == "yuri@example.com"] == [
        config_mod.Subscriber("yuri@example.com", "Yuri", ("Launch",))
    ]
    assert len(after.subscribers) == 3


# --------------------------------------------------------------------------- concurrency


def test_confirmations_and_cli_edits_at_the_same_moment_all_land(site: Site) -> None:
    emails = [f"web{i}@example.com" for i in range(12)]
    for i, email in enumerate(emails):
        site.subscribe(email, headers={"X-Forwarded-For": f"198.51.100.{i}"})
    links = [confirm_link(site.mails_to(email)[-1]) for email in emails]
    errors: list[str] = []

    def cli_adds() -> None:
        for i in range(6):
            result = subprocess.run(
                [sys.executable, "-m", "digest", "--config", str(site.config), "subscribers", "add", f"cli{i}@example.com"],
                capture_output=True, text=True, timeout=60, check=False,
            )
            if result.returncode:
                errors.append(result.stderr)

    adder = threading.Thread(target=cli_adds)
    adder.start()
    with ThreadPoolExecutor(6) as pool:
        codes = list(pool.map(lambda link: site.post("/confirm", {"token": token_of(link)}).status_code, links))
    adder.join(timeout=120)
    assert codes == [200] * len(links) and errors == []
    listed = {s.email for s in config_mod.load(site.config).subscribers}
    assert listed >= set(emails) | {f"cli{i}@example.com" for i in range(6)}
    assert len(listed) == 3 + 12 + 6


def test_two_hundred_concurrent_signups_are_all_recorded_and_mailed(site: Site) -> None:
    def one(i: int) -> int:
        headers = {"X-Forwarded-For": f"10.1.{i // 250}.{i % 250}"}
        return site.subscribe(f"crowd{i}@example.com", headers=headers).status_code

    with ThreadPoolExecutor(50) as pool:
        codes = list(pool.map(one, range(200)))
    assert codes == [200] * 200
    assert len(signup_rows(site.config)) == 200
    assert {str(m["To"]) for m in site.mails()} == {f"crowd{i}@example.com" for i in range(200)}


def test_the_server_answers_while_200_slow_clients_hold_connections(site: Site) -> None:
    port = int(site.base.rpartition(":")[2])
    slow: list[socket.socket] = []
    try:
        for i in range(200):
            sock = socket.create_connection(("127.0.0.1", port), timeout=5)
            sock.sendall(b"POST /subscribe HTTP/1.1\r\nHost: x\r\n" if i % 2 else b"GET /subscr")  # and then nothing
            slow.append(sock)
        started = time.monotonic()
        for _ in range(5):
            assert site.get("/subscribe").status_code == 200
        assert time.monotonic() - started < 10  # generous: responsive, not a timing benchmark
    finally:
        for sock in slow:
            sock.close()


# --------------------------------------------------------------------------- serving


def test_paths_under_base_url_prefix(make_config: MakeConfig) -> None:
    config = make_config()
    server, base = start(config, "/news")
    try:
        assert base.endswith("/news")
        page = httpx.get(base + "/subscribe")
        assert page.status_code == 200 and 'action="subscribe"' in page.text
        assert httpx.get(base.removesuffix("/news") + "/subscribe").status_code == 200  # a proxy that strips it
        answer = httpx.post(base + "/subscribe", data={"email": "p@example.com"}, headers={"Origin": base.removesuffix("/news")})
        assert answer.status_code == 200
        maildir = config_mod.load(config).delivery.maildir / "new"
        [mailed] = [message_from_bytes(f.read_bytes(), policy=policy.default) for f in maildir.iterdir()]
        assert f"{base}/confirm?token=" in text_part(mailed)  # type: ignore[arg-type]
    finally:
        server.shutdown()
        server.server_close()


def test_confirmation_email_through_smtp(make_config: MakeConfig, smtp_server: FaultySMTPServer) -> None:
    config = make_config(smtp=smtp_server)
    server, base = start(config)
    try:
        answer = httpx.post(base + "/subscribe", data={"email": "smtp@example.com"}, headers={"Origin": base})
        assert answer.status_code == 200
        [received] = smtp_server.by_recipient()["smtp@example.com"]
        assert f"{base}/confirm?token=" in text_part(received.message)
    finally:
        server.shutdown()
        server.server_close()


def test_importing_the_cli_loads_no_web_framework() -> None:
    code = "import sys, digest.cli; print(sorted(m for m in ('starlette', 'uvicorn', 'anyio') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60).stdout
    assert out.strip() == "[]"


def test_digest_serve_runs_only_the_web_part(make_config: MakeConfig, tmp_path: Path) -> None:
    config = make_config()
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    log = (tmp_path / "serve.log").open("w")
    process = subprocess.Popen(
        [sys.executable, "-m", "digest", "--config", str(config), "serve", "--listen", f"127.0.0.1:{port}"],
        stdout=log, stderr=subprocess.STDOUT,
    )
    try:
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            try:
                assert httpx.get(f"http://127.0.0.1:{port}/subscribe").status_code == 200
                break
            except httpx.ConnectError:
                time.sleep(0.1)
        else:
            pytest.fail((tmp_path / "serve.log").read_text())
        assert f"http://127.0.0.1:{port}/subscribe" in (tmp_path / "serve.log").read_text()
    finally:
        process.terminate()
        assert process.wait(timeout=20) == 0
        log.close()


def test_digest_run_serves_the_web_app_on_web_listen(make_config: MakeConfig, tmp_path: Path) -> None:
    """The daemon serves signup and the one-click unsubscribe on [web] listen, and stops with exit 0."""
    from test_schedule import start_daemon, stop, wait_for

    config = make_config(web={"listen": "127.0.0.1:0"}, schedule={"send_at": "07:00"})
    log = tmp_path / "daemon.log"
    daemon = start_daemon(config, log, "2026-11-21T03:00:00+00:00")
    try:
        wait_for(lambda: "unsubscribe endpoint on" in log.read_text(), "the web app", log)
        found = re.search(r"unsubscribe endpoint on (http://127\.0\.0\.1:\d+)/unsubscribe", log.read_text())
        assert found
        base = found.group(1)
        assert "Subscribe to Updates" in httpx.get(base + "/subscribe").text
        answer = httpx.post(base + "/subscribe", data={"email": "daemon@example.com"}, headers={"Origin": base})
        assert answer.status_code == 200 and "Check your inbox" in answer.text
        maildir = config_mod.load(config).delivery.maildir / "new"
        assert any(b"Confirm your subscription" in f.read_bytes() for f in maildir.iterdir())
        assert httpx.post(base + "/unsubscribe?email=ada%40example.com&token=forged").status_code == 403
    finally:
        assert stop(daemon) == 0, log.read_text()
