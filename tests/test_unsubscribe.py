"""One-click unsubscribe over HTTP (RFC 8058), then a send that skips the address (issue 7)."""

from __future__ import annotations

import re
import sqlite3
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import quote

import httpx
import pytest
from click.testing import CliRunner
from conftest import MakeConfig
from smtp_fault import FaultySMTPServer

from digest import config as config_mod
from digest import mail, web
from digest.cli import main
from digest.store import Store

DAY1 = "2026-11-21T07:00:00+00:00"
DAY2 = "2026-11-22T07:00:00+00:00"


def one_click(url: str) -> httpx.Response:
    """The POST a mail provider sends for RFC 8058 one-click unsubscribe."""
    form = {"Content-Type": "application/x-www-form-urlencoded"}
    return httpx.post(url, content=b"List-Unsubscribe=One-Click", headers=form)


def run(config: Path, *args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(main, ["--config", str(config), *args], catch_exceptions=False)
    return result.exit_code, result.stdout, result.stderr


@pytest.fixture
def served(make_config: MakeConfig, smtp_server: FaultySMTPServer) -> Iterator[tuple[Path, str]]:
    """A config whose send_if_empty makes day 2 send too, and its unsubscribe server's base URL."""
    config = make_config(smtp=smtp_server, schedule={"send_if_empty": True})
    server, thread = web.start_server(config, "127.0.0.1:0")
    try:
        yield config, f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


def suppressions(config: Path) -> list[tuple[str, str]]:
    db = sqlite3.connect(config_mod.load(config).state_path)
    try:
        return db.execute("SELECT email, reason FROM suppressions").fetchall()
    finally:
        db.close()


def mailed_link(smtp_server: FaultySMTPServer, email: str, base: str) -> str:
    """The https one-click URL from the List-Unsubscribe header, pointed at the local server."""
    header = smtp_server.by_recipient()[email][-1].message["List-Unsubscribe"]
    url = re.search(r"<(https://[^>]+)>", header)
    assert url is not None, header
    assert "List-Unsubscribe=One-Click" in smtp_server.by_recipient()[email][-1].message["List-Unsubscribe-Post"]
    return url.group(1).replace("https://news.example.com", base)


@pytest.mark.parametrize("secret", ["s3cret-from-the-environment", ""])
def test_one_click_unsubscribe_then_the_next_send_skips_the_address(
    served: tuple[Path, str], smtp_server: FaultySMTPServer, monkeypatch: pytest.MonkeyPatch, secret: str
) -> None:
    config, base = served
    monkeypatch.setenv("DIGEST_SECRET", secret)  # empty: both sides fall back to the state's key
    assert run(config, "send", "--now", DAY1)[0] == 0
    link = mailed_link(smtp_server, "ada@example.com", base)

    page = httpx.get(link)  # what a mail scanner's prefetch does
    assert page.status_code == 200 and 'method="post"' in page.text and "ada@example.com" in page.text
    assert suppressions(config) == []

    response = one_click(link)
    assert response.status_code == 200 and "Unsubscribed" in response.text
    assert suppressions(config) == [("ada@example.com", "one-click")]
    replay = one_click(link)
    assert replay.status_code == 200 and "already unsubscribed" in replay.text
    assert len(suppressions(config)) == 1

    listing = run(config, "subscribers", "list")[1]
    assert re.search(r"^ada@example\.com .* unsubscribed$", listing, re.M), listing
    code, out, err = run(config, "send", "--now", DAY2)
    assert code == 0, err
    assert "delivered to 2 of 2 subscribers" in out
    got = smtp_server.by_recipient()
    assert len(got["ada@example.com"]) == 1  # day 1 only
    assert len(got["yuri@example.com"]) == 2 and len(got["valentina@example.org"]) == 2

    code, out, _ = run(config, "subscribers", "prune")
    assert code == 0 and "Removed ada@example.com" in out
    assert "ada@example.com" not in config.read_text()


def test_forged_tokens_are_refused_and_change_nothing(
    served: tuple[Path, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    config, base = served
    monkeypatch.setenv("DIGEST_SECRET", "the-real-key")
    ada = f"{base}/unsubscribe?email=ada%40example.com"
    forged = [
        f"{ada}&token={'0' * 32}",
        f"{ada}&token={mail.unsubscribe_token(b'guessed-key', 'ada@example.com')}",
        f"{ada}&token={mail.unsubscribe_token(b'the-real-key', 'yuri@example.com')}",  # someone else's token
        f"{ada}&token=%C3%A9%00",
        ada,
        f"{base}/unsubscribe",
    ]
    for url in forged:
        assert one_click(url).status_code == 403, url
        page = httpx.get(url)
        assert page.status_code == 403 and "<form" not in page.text
    assert suppressions(config) == []
    good = mail.unsubscribe_token(b"the-real-key", "ada@example.com")
    assert one_click(f"{base}/unsubscribe?email=ada%40example.com&token={good}").status_code == 200
    assert suppressions(config) == [("ada@example.com", "one-click")]


def test_handler_for_the_preview_server(make_config: MakeConfig, monkeypatch: pytest.MonkeyPatch) -> None:
    config = make_config()
    monkeypatch.setenv("DIGEST_SECRET", "k")
    handle = web.make_handler(config)
    token = mail.unsubscribe_token(b"k", "Yuri@Example.com")
    query = f"email={quote('Yuri@Example.com')}&token={token}"
    status, headers, body = handle("GET", "/unsubscribe", query, b"")
    assert status == 200 and headers["Cache-Control"] == "no-store" and b"<form" in body
    assert handle("PUT", "/unsubscribe", query, b"")[0] == 405
    assert handle("GET", "/elsewhere", query, b"")[0] == 404
    assert handle("POST", "/unsubscribe", {"email": ["Yuri@Example.com"], "token": [token]}, b"")[0] == 200
    with Store(config_mod.load(config).state_path) as store:
        assert store.suppressed() == {"yuri@example.com"}
    status, _, body = handle("GET", "/unsubscribe", query, b"")
    assert status == 200 and b"already unsubscribed" in body and b"<form" not in body


def test_listen_address_in_use_is_one_clear_error(make_config: MakeConfig) -> None:
    config = make_config()
    server, thread = web.start_server(config, "127.0.0.1:0")
    try:
        with pytest.raises(web.DigestError, match=r"\[web\] listen"):
            web.start_server(config, f"127.0.0.1:{server.server_address[1]}")
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)
