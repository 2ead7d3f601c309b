"""kill -9 of a `digest send` mid-batch, then `digest send` again (issue 4).

The promise: nobody lost, and at most the messages whose 250 was not yet recorded (one
per connection) arrive twice, with the same Message-ID.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from datetime import date
from pathlib import Path

import pytest
from click.testing import CliRunner
from conftest import ROOT, MakeConfig, toml_value
from smtp_fault import FaultySMTPServer

from digest import config as config_mod
from digest.cli import main
from digest.store import Store

NOW = "2026-11-21T07:00:00+00:00"
EMAILS = [f"reader{i:02d}@example.com" for i in range(40)]


def send_then_kill(config: Path, smtp_server: FaultySMTPServer, after: int) -> None:
    """Start `digest send` in a subprocess and SIGKILL it once the server took `after` messages."""
    smtp_server.handler.delay = 0.02  # per SMTP command: the batch takes a few seconds
    env = {k: v for k, v in os.environ.items() if not k.startswith("DIGEST_")}
    env["PYTHONPATH"] = str(ROOT)
    proc = subprocess.Popen(
        [sys.executable, "-m", "digest", "--config", str(config), "send", "--now", NOW],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )
    try:
        deadline = time.monotonic() + 60
        while len(smtp_server.received) < after and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.005)
        assert proc.poll() is None, proc.communicate()
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.kill()
        proc.communicate(timeout=30)


@pytest.mark.parametrize(("kill_after", "connections"), [(3, 1), (20, 3)])
def test_sigkill_mid_batch_then_send_again_loses_nobody_and_duplicates_at_most_in_flight(
    make_config: MakeConfig, smtp_server: FaultySMTPServer, kill_after: int, connections: int
) -> None:
    config = make_config(smtp=smtp_server, subscribers=[{"email": e, "name": e[:8]} for e in EMAILS])
    text = config.read_text(encoding="utf-8")
    config.write_text(text.replace("[smtp]\n", f"[smtp]\nconnections = {toml_value(connections)}\n", 1))
    send_then_kill(config, smtp_server, kill_after)
    smtp_server.handler.delay = 0.0
    first = len(smtp_server.received)
    assert kill_after <= first < len(EMAILS)

    result = CliRunner().invoke(main, ["--config", str(config), "send", "--now", "2026-11-21T07:05:00+00:00"])
    assert result.exit_code == 0, result.stderr
    assert f"delivered to {len(EMAILS)} of {len(EMAILS)} subscribers" in result.stdout

    got = smtp_server.by_recipient()
    assert sorted(got) == EMAILS  # nobody lost
    twice = {email: items for email, items in got.items() if len(items) > 1}
    assert len(twice) <= connections, sorted(twice)  # only what was in flight at the kill
    for items in twice.values():
        assert len(items) == 2 and len({item.message["Message-ID"] for item in items}) == 1
    with Store(config_mod.load(config).state_path) as store:
        states = store.deliveries(date(2026, 11, 21))
    assert {status for status, _attempts, _next in states.values()} == {"sent"}


def test_the_state_survives_the_kill(make_config: MakeConfig, smtp_server: FaultySMTPServer) -> None:
    """After the kill, the records say sent for exactly the messages the server took (minus in-flight)."""
    config = make_config(smtp=smtp_server, subscribers=[{"email": e} for e in EMAILS[:20]])
    send_then_kill(config, smtp_server, 8)
    accepted = set(smtp_server.by_recipient())
    with Store(config_mod.load(config).state_path) as store:
        rows = store.db.execute("SELECT email, status FROM deliveries").fetchall()
    sent = {email for email, status in rows if status == "sent"}
    assert sent <= accepted  # never marked sent before the 250
    assert len(accepted - sent) <= 2  # default [smtp] connections = 2: the in-flight ones
    assert {status for _email, status in rows} <= {"sent", "pending"}
