"""End to end: config.toml -> one delivered email per subscriber (issue 2)."""

from __future__ import annotations

import mailbox
import re
from email import policy
from email.parser import BytesParser
from pathlib import Path

from click.testing import CliRunner
from conftest import MakeConfig
from smtp_fault import FaultySMTPServer

from digest.cli import main

NOW = "2026-11-21T07:00:00+00:00"
SAMPLE_TITLES = [
    "Kazakhstan signs on to China's lunar research station",
    "Bulgaria becomes the latest signatory of the NASA-led Artemis Accords",
    "Meridian Aerospace's Colossus heavy-lift rocket reaches orbit on maiden flight",
]


def run(config: Path, *args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(main, ["--config", str(config), *args], catch_exceptions=False)
    return result.exit_code, result.stdout, result.stderr


def test_send_over_smtp_delivers_one_complete_message_per_subscriber(
    make_config: MakeConfig, smtp_server: FaultySMTPServer
) -> None:
    config = make_config(smtp=smtp_server)
    code, out, err = run(config, "send", "--now", NOW)
    assert code == 0, err
    assert re.search(r"5 feeds, \d+ new entries, \d+ stories, delivered to 3 of 3 subscribers", out), out
    got = smtp_server.by_recipient()
    assert sorted(got) == ["ada@example.com", "valentina@example.org", "yuri@example.com"]
    for rcpt, items in got.items():
        assert len(items) == 1
        msg = BytesParser(policy=policy.strict).parsebytes(items[0].data)
        assert msg.get_content_type() == "multipart/alternative"
        assert rcpt in msg["To"]
        for header in ("Date", "Message-ID", "From", "Subject", "List-Id", "List-Unsubscribe", "List-Unsubscribe-Post"):
            assert msg[header], header
        html = msg.get_body(("html",)).get_content()
        text = msg.get_body(("plain",)).get_content()
        assert "<style" not in html.split("<body", 1)[1] or "@media" in html.split("<body", 1)[1]
        assert 'style="' in html  # CSS inlined onto elements
        for line in items[0].data.split(b"\r\n"):
            assert len(line) < 998
        if rcpt != "yuri@example.com":  # yuri only gets Launch and Commercial
            for title in SAMPLE_TITLES[:2]:
                assert title in text
                assert title.replace("'", "&#39;") in html or title in html
    yuri = got["yuri@example.com"][0].message
    assert "Politics" not in yuri.get_body(("plain",)).get_content().split("--")[0].upper().split("IN THIS EDITION")[0]


def test_every_story_title_is_in_both_parts(make_config: MakeConfig, smtp_server: FaultySMTPServer) -> None:
    from digest import config as config_mod
    from digest.store import Store

    config_path = make_config(smtp=smtp_server)
    assert run(config_path, "send", "--now", NOW)[0] == 0
    cfg = config_mod.load(config_path)
    with Store(cfg.state_path) as store:
        edition = store.edition(__import__("datetime").date(2026, 11, 21))
    assert edition is not None and edition.stories
    ada = smtp_server.by_recipient()["ada@example.com"][0].message
    html = ada.get_body(("html",)).get_content()
    text = ada.get_body(("plain",)).get_content()
    import html as html_mod

    flat_text = " ".join(text.split())
    for story in edition.stories:
        assert (
            html_mod.escape(story.lead.title, quote=False) in html.replace("&#39;", "'").replace("&#x27;", "'")
            or html_mod.escape(story.lead.title) in html
        )
        assert " ".join(story.lead.title.split()) in flat_text


def test_second_send_the_same_day_sends_nothing(make_config: MakeConfig, smtp_server: FaultySMTPServer) -> None:
    config = make_config(smtp=smtp_server)
    assert run(config, "send", "--now", NOW)[0] == 0
    code, out, _ = run(config, "send", "--now", "2026-11-21T09:30:00+00:00")
    assert code == 0
    assert "nothing new to send" in out
    assert len(smtp_server.received) == 3


def test_next_day_with_nothing_new_sends_no_edition(make_config: MakeConfig, smtp_server: FaultySMTPServer) -> None:
    config = make_config(smtp=smtp_server)
    assert run(config, "send", "--now", NOW)[0] == 0
    code, out, _ = run(config, "send", "--now", "2026-11-22T07:00:00+00:00")
    assert code == 0
    assert "nothing new" in out
    assert len(smtp_server.received) == 3


def test_maildir_delivery_writes_into_new(make_config: MakeConfig, tmp_path: Path) -> None:
    config = make_config()
    code, out, err = run(config, "send", "--now", NOW)
    assert code == 0, err
    assert "outbox" in out
    box = mailbox.Maildir(tmp_path / "outbox", create=False)
    assert len(list((tmp_path / "outbox" / "new").iterdir())) == 3
    recipients = sorted(str(m["To"]) for m in box)
    assert any("ada@example.com" in r for r in recipients)
    code, out, _ = run(config, "send", "--now", NOW)
    assert len(list((tmp_path / "outbox" / "new").iterdir())) == 3


def test_message_ids_are_deterministic_per_edition_and_subscriber(make_config: MakeConfig, tmp_path: Path) -> None:
    config = make_config()
    run(config, "send", "--now", NOW)
    ids = {str(m["To"]): m["Message-ID"] for m in mailbox.Maildir(tmp_path / "outbox", create=False)}
    from digest.mail import message_id

    assert ids["Ada Lovelace <ada@example.com>"] == message_id(
        __import__("datetime").date(2026, 11, 21), "ada@example.com", "orbitdaily.example"
    )


def test_dry_run_records_nothing(make_config: MakeConfig, tmp_path: Path) -> None:
    config = make_config()
    code, out, _ = run(config, "send", "--dry-run", "--now", NOW)
    assert code == 0 and "dry run" in out
    assert not (tmp_path / "outbox").exists()
    code, out, _ = run(config, "send", "--now", NOW)
    assert "delivered to 3 of 3" in out


def test_status_reports_the_edition(make_config: MakeConfig) -> None:
    config = make_config()
    run(config, "send", "--now", NOW)
    code, out, _ = run(config, "status")
    assert code == 0
    assert "2026-11-21" in out and "3 sent" in out
