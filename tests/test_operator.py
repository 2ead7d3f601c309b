"""The operator's first hour: `digest init`, `send --test`, progress, the README quick start."""

from __future__ import annotations

import email
import fcntl
import mailbox
import os
import pty
import select
import sqlite3
import struct
import subprocess
import sys
import termios
import time
from email import policy
from pathlib import Path

import pytest
from click.testing import CliRunner, Result
from conftest import ROOT, MakeConfig
from feedserver import FeedServer
from hostile_corpus import item, rss
from smtp_fault import Fault, FaultySMTPServer

from digest import config as config_mod
from digest.cli import main
from digest.progress import LogProgress

NOW = "2026-11-21T07:00:00+00:00"


def cli(config: Path, *args: str, input: str | None = None) -> Result:
    return CliRunner().invoke(main, ["--config", str(config), *args], input=input)


def dump(path: Path) -> list[str]:
    with sqlite3.connect(path) as db:
        return list(db.iterdump())


# --------------------------------------------------------------------------- init


def test_init_asks_writes_a_commented_config_and_never_overwrites(tmp_path: Path) -> None:
    folder = tmp_path / "mynews"
    answers = "Orbit Weekly\nOrbit Weekly <news@orbit.example>\nEurope/Paris\nme@orbit.example\n"
    done = CliRunner().invoke(main, ["init", str(folder)], input=answers)
    assert done.exit_code == 0, done.output
    path = folder / "config.toml"
    text = path.read_text(encoding="utf-8")
    assert text.startswith("# digest: configuration of \"Orbit Weekly\"") and "# Feeds: name" in text
    config = config_mod.load(path, require_feeds=False)
    assert config.newsletter.title == "Orbit Weekly" and config.newsletter.timezone == "Europe/Paris"
    assert [s.email for s in config.subscribers] == ["me@orbit.example"] and config.feeds == ()
    with pytest.raises(config_mod.ConfigError, match="digest feeds add URL"):
        config_mod.load(path)  # runnable only once it has a feed
    again = CliRunner().invoke(main, ["init", str(folder), "--title", "X", "--from", "x@x.example",
                                      "--timezone", "UTC", "--email", "x@x.example"])  # fmt: skip
    assert again.exit_code == 1 and "already exists; not overwritten" in again.output
    assert path.read_text(encoding="utf-8") == text


def test_init_with_options_asks_nothing_and_refuses_bad_answers(tmp_path: Path) -> None:
    args = ["init", str(tmp_path / "a"), "--title", 'Quote " and \\ back', "--from", "Me <me@example.com>",
            "--timezone", "UTC"]  # fmt: skip
    done = CliRunner().invoke(main, args, input="\n")  # the address defaults to the sender's
    assert done.exit_code == 0, done.output
    config = config_mod.load(tmp_path / "a" / "config.toml", require_feeds=False)
    assert config.newsletter.title == 'Quote " and \\ back' and config.subscribers[0].email == "me@example.com"
    bad = CliRunner().invoke(main, ["init", str(tmp_path / "b"), "--title", "T", "--from", "me@example.com",
                                    "--timezone", "Mars/Olympus", "--email", "me@example.com"])  # fmt: skip
    assert bad.exit_code == 1 and "unknown time zone 'Mars/Olympus'" in bad.output
    assert not (tmp_path / "b" / "config.toml").exists()


# --------------------------------------------------------------------------- send --test


def test_send_test_records_nothing_and_the_real_send_still_delivers_everything(make_config: MakeConfig) -> None:
    config = make_config()
    assert cli(config, "fetch", "--now", NOW).exit_code == 0
    state = config.parent / ".digest" / "state.sqlite3"
    before = dump(state)
    done = cli(config, "send", "--now", NOW, "--test", "me@example.com", "yuri@example.com")
    assert done.exit_code == 0, done.output
    assert "sent to 2 of 2" in done.output and "nothing recorded" in done.output
    assert dump(state) == before  # no edition frozen, no entry used up, no delivery row
    box = mailbox.Maildir(config.parent / "outbox", create=False)
    tests = {m["To"]: m for m in box}
    assert set(tests) == {"<me@example.com>", "Yuri <yuri@example.com>"}
    assert all(m["Subject"].startswith("[TEST] Orbit Daily") for m in tests.values())
    assert len(str(tests["<me@example.com>"])) > len(str(tests["Yuri <yuri@example.com>"]))  # Yuri's sections only
    real = cli(config, "send", "--now", NOW)
    assert real.exit_code == 0 and "delivered to 3 of 3 subscribers" in real.output, real.output
    ids = [m["Message-ID"] for m in mailbox.Maildir(config.parent / "outbox", create=False)]
    assert len(ids) == 5 and len(set(ids)) == 5  # the test copy does not pose as the real one
    assert dump(state) != before  # control: a real send does record


def test_send_test_over_smtp_and_its_errors(make_config: MakeConfig, smtp_server: FaultySMTPServer) -> None:
    config = make_config(smtp=smtp_server)
    done = cli(config, "send", "--now", NOW, "--test", "me@example.com")
    assert done.exit_code == 0, done.output
    (message,) = smtp_server.by_recipient()["me@example.com"]
    parsed = email.message_from_bytes(message.data, policy=policy.default)
    assert parsed["Subject"].startswith("[TEST] ")
    assert not (config.parent / ".digest").exists()  # a test send creates no state either
    assert cli(config, "send", "--test").exit_code == 2  # usage: an address is needed
    assert cli(config, "send", "me@example.com").exit_code == 2  # addresses only with --test
    bad = cli(config, "send", "--test", "not-an-address")
    assert bad.exit_code == 1 and "--test: not a valid email address" in bad.output
    smtp_server.add_fault(Fault("RCPT", 550, "5.1.1 No such user here", rcpt="nobody@example.com", times=-1))
    refused = cli(config, "send", "--test", "me@example.com", "nobody@example.com")
    assert refused.exit_code == 1
    assert "Error: the test did not reach nobody@example.com: 550 5.1.1 No such user here" in refused.output
    assert not (config.parent / ".digest").exists()


# --------------------------------------------------------------------------- progress


def run_with_stderr(args: list[str], cwd: Path, tty: bool) -> str:
    """Runs the CLI with stderr on a pseudo-terminal (80 columns) or a pipe; returns what stderr got."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("DIGEST_")}
    if not tty:
        done = subprocess.run([sys.executable, "-m", "digest", *args], cwd=cwd, env=env, capture_output=True,
                              text=True, timeout=120, check=False)  # fmt: skip
        assert done.returncode == 0, done.stderr
        return done.stderr
    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 80, 0, 0))
    process = subprocess.Popen([sys.executable, "-m", "digest", *args], cwd=cwd, env=env,
                               stdout=subprocess.DEVNULL, stderr=slave, stdin=subprocess.DEVNULL)  # fmt: skip
    os.close(slave)
    output = b""
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        ready, _, _ = select.select([master], [], [], 0.2)
        if ready:
            try:
                chunk = os.read(master, 65536)
            except OSError:  # EIO: the child closed the terminal
                break
            if not chunk:
                break
            output += chunk
        elif process.poll() is not None:
            break
    os.close(master)
    assert process.wait(timeout=30) == 0, output
    return output.decode("utf-8", "replace")


def test_progress_bar_on_a_terminal_and_plain_in_a_pipe(make_config: MakeConfig) -> None:
    config = make_config()
    bar = run_with_stderr(["--config", str(config), "send", "--now", NOW], config.parent, tty=True)
    assert "polling" in bar and "5/5" in bar and "feeds/s" in bar, bar  # count and rate
    assert "sending" in bar and "3/3" in bar and "messages/s" in bar, bar
    assert "100%" in bar and "\r" in bar
    config.unlink()
    config = make_config()
    plain = run_with_stderr(["--config", str(config), "fetch", "--now", NOW], config.parent, tty=False)
    assert plain == ""  # no bar, no carriage returns in logs: a short poll is said by its summary line


def test_log_progress_writes_a_line_per_interval_and_a_total(caplog: pytest.LogCaptureFixture) -> None:
    clock = iter([0.0, 4.0, 11.0, 15.0, 23.0, 30.0])
    progress = LogProgress(interval=10, clock=lambda: next(clock))
    with caplog.at_level("INFO", logger="digest.progress"):
        progress.start("sending", 100, "messages")  # t=0
        for _ in range(4):  # t=4, 11 (line), 15, 23 (line)
            progress.advance(10)
        progress.done()  # t=30
    assert [r.getMessage() for r in caplog.records] == [
        "sending: 20/100 messages (1.8/s, ~44 s left)",
        "sending: 40/100 messages (1.7/s, ~34 s left)",
        "sending: 40/100 messages in 30 s",
    ]


# --------------------------------------------------------------------------- the README quick start


def test_readme_quick_start_from_nothing_to_a_real_newsletter(
    tmp_path: Path, feed_server: FeedServer, smtp_server: FaultySMTPServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    titles = ["Colossus rocket reaches orbit", "Lunar lander budget approved", "Mars sample return delayed"]
    items = "".join(item(title, f"l{i}") for i, title in enumerate(titles))
    feed_server.add("/feed.xml", rss(items, title="Spacemagz"))
    site = feed_server.add("/", b'<html><head><link rel="alternate" type="application/rss+xml" href="/feed.xml">'
                                b"</head><body>Spacemagz</body></html>", headers={"Content-Type": "text/html"})  # fmt: skip
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    for step in ("digest init", "digest feeds add https://", "digest preview", "digest send --test", "digest run"):
        assert step in readme, step
    monkeypatch.chdir(tmp_path)
    init = CliRunner().invoke(main, ["init", "--title", "Spacemagz Daily", "--from", "Me <me@example.com>",
                                     "--timezone", "UTC", "--email", "me@example.com"])  # fmt: skip
    assert init.exit_code == 0, init.output
    config = tmp_path / "config.toml"
    text = config.read_text(encoding="utf-8")  # the test's only hand edits: loopback allowed, the local relay
    text = text.replace("allow_hosts = []", 'allow_hosts = ["127.0.0.1"]').replace('transport = "maildir"', 'transport = "smtp"')
    text = text.replace('host = "localhost"\nport = 587\nsecurity = "starttls"',
                        f'host = "127.0.0.1"\nport = {smtp_server.port}\nsecurity = "none"')
    config.write_text(text, encoding="utf-8")
    added = cli(config, "feeds", "add", site)
    assert added.exit_code == 0 and "Added 'Spacemagz'" in added.output, added.output
    preview = cli(config, "preview", "--output", "next.html")
    assert preview.exit_code == 0, preview.output
    html = (tmp_path / "next.html").read_text(encoding="utf-8")
    assert all(title in html for title in titles)
    test = cli(config, "send", "--test", "me@example.com")
    assert test.exit_code == 0 and "sent to 1 of 1" in test.output, test.output
    real = cli(config, "send")
    assert real.exit_code == 0 and "delivered to 1 of 1 subscribers" in real.output, real.output
    subjects = [email.message_from_bytes(m.data)["Subject"] for m in smtp_server.by_recipient()["me@example.com"]]
    assert len(subjects) == 2 and subjects[0].startswith("[TEST] Spacemagz Daily") and subjects[0][7:] == subjects[1]


def test_importing_the_cli_loads_none_of_the_operator_modules() -> None:
    """Start-up (issue 17): the bar, the decoders and the operator commands load only when used."""
    code = ("import sys, digest.cli; print(' '.join(m for m in ('tqdm', 'zstandard', 'digest.discover', "
            "'digest.feeds', 'digest.starter', 'digest.config_edit') if m in sys.modules))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True)
    assert done.stdout.strip() == ""
    control = subprocess.run([sys.executable, "-c", "import digest.discover, sys; print('digest.feeds' in sys.modules,"
                              " 'digest.discover' in sys.modules)"], capture_output=True, text=True, timeout=60, check=True)  # fmt: skip
    assert control.stdout.split() == ["False", "True"]
